/*
 * An HTTP/2 model server (see h2server.h).
 */
#include "tests/support/h2server.h"

#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stack/proc.h"
#include "tests/support/check.h"
#include "tests/support/files.h"
#include "tests/support/netport.h"

struct h2server {
    char dir[64];
    char cert[128];
    int port;
    shoal_proc_t *proc;
};

/* Runs argv to its end; it must exit 0 within 30 s. */
static void run(char *const argv[], const char *log)
{
    char err[256];
    int status = -1;
    shoal_proc_t *p = shoal_proc_spawn(NULL, argv, NULL, log, err, sizeof(err));
    if (!p)
        test_fail("%s: %s", argv[0], err);
    assert_int_eq(shoal_proc_wait(p, 30000, &status), SHOAL_OK);
    if (status != 0)
        test_fail("%s exited with %d (see %s)", argv[0], status, log);
    shoal_proc_destroy(p);
}

static void make_dir(const char *parent, const char *name, char *path, size_t len)
{
    snprintf(path, len, "%s/%s", parent, name);
    if (mkdir(path, 0700) != 0)
        test_fail("cannot make %s", path);
}

h2server_t *h2server_start(void)
{
    h2server_t *s = calloc(1, sizeof(*s));
    char key[128], log[128], doc[128], v1[160], chat[192], path[256], port[16], err[256];
    assert_true(s != NULL);
    snprintf(s->dir, sizeof(s->dir), "/tmp/shoal-h2-XXXXXX");
    assert_true(mkdtemp(s->dir) != NULL);
    snprintf(key, sizeof(key), "%s/key.pem", s->dir);
    snprintf(s->cert, sizeof(s->cert), "%s/cert.pem", s->dir);
    snprintf(log, sizeof(log), "%s/openssl.log", s->dir);
    char *gen[] = {"openssl",
                   "req",
                   "-x509",
                   "-newkey",
                   "ec",
                   "-pkeyopt",
                   "ec_paramgen_curve:prime256v1",
                   "-nodes",
                   "-keyout",
                   key,
                   "-out",
                   s->cert,
                   "-days",
                   "2",
                   "-subj",
                   "/CN=shoal test",
                   "-addext",
                   "subjectAltName=IP:127.0.0.1",
                   NULL};
    run(gen, log);

    make_dir(s->dir, "doc", doc, sizeof(doc));
    make_dir(doc, "v1", v1, sizeof(v1));
    make_dir(v1, "chat", chat, sizeof(chat));
    files_write(chat, "completions",
                "{\"id\": \"chatcmpl-h2\", \"object\": \"chat.completion\", \"model\": \"h2\", "
                "\"choices\": [{\"index\": 0, \"message\": {\"role\": \"assistant\", "
                "\"content\": \"" H2SERVER_CONTENT "\"}, \"finish_reason\": \"stop\"}], "
                "\"usage\": {\"prompt_tokens\": 5, \"completion_tokens\": 2, "
                "\"total_tokens\": 7}}",
                path, sizeof(path));

    s->port = netport_free();
    snprintf(port, sizeof(port), "%d", s->port);
    snprintf(log, sizeof(log), "%s/nghttpd.log", s->dir);
    char *serve[] = {"nghttpd", "--htdocs", doc,     "--address", "127.0.0.1",
                     port,      key,        s->cert, NULL};
    if (!(s->proc = shoal_proc_spawn(NULL, serve, NULL, log, err, sizeof(err))))
        test_fail("nghttpd: %s (install Debian's nghttp2-server: make test-deps)", err);
    netport_wait_listening(s->port, 10, "nghttpd", log);
    return s;
}

int h2server_port(const h2server_t *s)
{
    return s->port;
}

int h2server_pid(const h2server_t *s)
{
    return (int)shoal_proc_pid(s->proc);
}

const char *h2server_ca_file(const h2server_t *s)
{
    return s->cert;
}

long h2server_connections(const h2server_t *s)
{
    char line[512], rem[64];
    unsigned st;
    long n = 0;
    FILE *f = fopen("/proc/net/tcp", "r");
    assert_true(f != NULL);
    while (fgets(line, sizeof(line), f)) {
        unsigned long addr;
        unsigned rport;
        if (sscanf(line, " %*d: %*s %63s %x", rem, &st) != 2 ||
            sscanf(rem, "%lx:%x", &addr, &rport) != 2)
            continue; /* the header line */
        /* the clients' ends: remote 127.0.0.1:port, established (01) */
        n += st == 1 && rport == (unsigned)s->port && addr == 0x0100007FUL;
    }
    fclose(f);
    return n;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void h2server_stop(h2server_t *s)
{
    if (!s)
        return;
    shoal_proc_kill(s->proc, SIGTERM);
    shoal_proc_wait(s->proc, 5000, NULL);
    shoal_proc_destroy(s->proc);
    if (nftw(s->dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "could not remove %s\n", s->dir);
    free(s);
}
