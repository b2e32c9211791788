/*
 * Tree removal for scratch directories (see workdir.h).
 */
#include "stack/workdir.h"

#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0; /* keep going: remove as much as possible */
}

int shoal_workdir_remove(const char *path)
{
    nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
    return access(path, F_OK) == 0 ? -1 : 0;
}
