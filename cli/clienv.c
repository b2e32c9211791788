/*
 * dev.env discovery and loading (see clienv.h).
 */
#include "cli/clienv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void shoal_clienv_path(char *buf, size_t len)
{
    const char *home = getenv("SHOAL_HOME");
    if (home && *home) {
        snprintf(buf, len, "%s/dev.env", home);
        return;
    }
    home = getenv("HOME");
    snprintf(buf, len, "%s/.shoal/dev.env", home && *home ? home : ".");
}

int shoal_clienv_load(void)
{
    char path[1024], line[2048];
    int n = 0;

    shoal_clienv_path(path, sizeof(path));
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f)) {
        char *p = line;
        if (strncmp(p, "export ", 7) != 0)
            continue;
        p += 7;
        char *eq = strchr(p, '=');
        if (!eq)
            continue;
        *eq = '\0';
        char *v = eq + 1;
        v[strcspn(v, "\r\n")] = '\0';
        size_t vl = strlen(v);
        if (vl >= 2 && v[0] == '\'' && v[vl - 1] == '\'') {
            v[vl - 1] = '\0';
            v++;
        }
        if (!getenv(p) && setenv(p, v, 0) == 0)
            n++;
    }
    fclose(f);
    return n;
}
