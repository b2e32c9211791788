/*
 * Loopback ports (see netport.h).
 */
#include "tests/support/netport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/check.h"

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    return sa;
}

int netport_free(void)
{
    struct sockaddr_in sa = loopback(0);
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

void netport_wait_listening(int port, double timeout_s, const char *what, const char *log)
{
    double deadline = check_now_s() + timeout_s;
    for (;;) {
        struct sockaddr_in sa = loopback(port);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(fd >= 0);
        int up = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(fd);
        if (up)
            return;
        if (check_now_s() > deadline)
            test_fail("%s did not listen on port %d within %.0f s (see %s)", what, port, timeout_s,
                      log);
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
