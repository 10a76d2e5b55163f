/*
 * null_scp: the floor of the SCP-side association-cycle benchmark.
 *
 *   null_scp PORT AC_FILE RSP_FILE RP_FILE [PROCESSES]
 *
 * A single-threaded epoll TCP server that frames PDUs by their 6-byte
 * header (PS3.8 9.3.1: type, reserved, 32-bit big-endian length) and, for
 * each whole PDU, writes a reply read once from a file at start-up:
 *
 *   A-ASSOCIATE-RQ (0x01) -> the bytes of AC_FILE (an A-ASSOCIATE-AC)
 *   P-DATA-TF      (0x04) -> the bytes of RSP_FILE (a C-ECHO-RSP)
 *   A-RELEASE-RQ   (0x05) -> the bytes of RP_FILE (an A-RELEASE-RP)
 *   anything else         -> close the connection
 *
 * It does no DICOM work at all: no decoding, no negotiation, no state
 * machine.  What it costs per cycle is the kernel's TCP work (accept, reads,
 * writes, close) plus an epoll loop, which every real server pays too.  So
 * its cycles/s, measured with the same load generator on the same machine,
 * is the ceiling that no server, in any language, can pass there; a target
 * above it cannot be met by the server under test on that machine.
 *
 * It is a benchmark instrument, not a DICOM implementation: it answers only
 * the exact cycle the generator plays (benchmarks/raw_client.py).
 * PROCESSES > 1 forks after listen(); the processes share the listening
 * socket (EPOLLEXCLUSIVE), as `aiodicom serve --workers N` does with
 * SO_REUSEPORT.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_FD 65536

struct conn {
    unsigned char hdr[6];
    unsigned have;     /* header bytes received */
    unsigned long left; /* body bytes still to skip */
    unsigned char type;
    unsigned char in_body;
};

static struct conn conns[MAX_FD];
static unsigned char *reply[3];
static size_t reply_len[3];

static void load(const char *path, int k)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0) {
        perror(path);
        exit(2);
    }
    reply_len[k] = (size_t)st.st_size;
    reply[k] = malloc(reply_len[k] ? reply_len[k] : 1);
    if (!reply[k] || fread(reply[k], 1, reply_len[k], f) != reply_len[k]) {
        fprintf(stderr, "null_scp: cannot read %s\n", path);
        exit(2);
    }
    fclose(f);
}

static void drop(int ep, int fd)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
}

/* A whole PDU has arrived: answer it.  Returns 0 to keep the connection. */
static int answer(int fd, unsigned char type)
{
    int k;
    switch (type) {
    case 0x01: k = 0; break;
    case 0x04: k = 1; break;
    case 0x05: k = 2; break;
    default: return -1; /* A-ABORT or anything unexpected */
    }
    /* the replies are a few hundred bytes into an idle socket: one send */
    ssize_t n = send(fd, reply[k], reply_len[k], MSG_NOSIGNAL);
    return n == (ssize_t)reply_len[k] ? 0 : -1;
}

/* Read what is there; frame PDUs; answer each whole one. */
static int readable(int fd)
{
    unsigned char buf[65536];
    struct conn *c = &conns[fd];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0)
            return -1; /* the requestor closed (after the A-RELEASE-RP) */
        if (n < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        size_t off = 0;
        while (off < (size_t)n) {
            if (!c->in_body) {
                while (c->have < 6 && off < (size_t)n)
                    c->hdr[c->have++] = buf[off++];
                if (c->have < 6)
                    break;
                c->type = c->hdr[0];
                c->left = ((unsigned long)c->hdr[2] << 24) | ((unsigned long)c->hdr[3] << 16) |
                          ((unsigned long)c->hdr[4] << 8) | c->hdr[5];
                c->in_body = 1;
            }
            size_t take = (size_t)n - off;
            if (take > c->left)
                take = c->left;
            off += take;
            c->left -= take;
            if (c->left == 0) {
                c->in_body = 0;
                c->have = 0;
                if (answer(fd, c->type) != 0)
                    return -1;
            }
        }
        if ((size_t)n < sizeof buf)
            return 0;
    }
}

static void serve(int lfd)
{
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.fd = lfd};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) != 0) {
        perror("epoll");
        exit(2);
    }
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_wait");
            exit(2);
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                for (;;) {
                    int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (cfd < 0)
                        break;
                    if (cfd >= MAX_FD) {
                        close(cfd);
                        continue;
                    }
                    int one = 1;
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    memset(&conns[cfd], 0, sizeof conns[cfd]);
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = cfd};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev) != 0)
                        close(cfd);
                }
            } else if (readable(fd) != 0) {
                drop(ep, fd);
            }
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: null_scp PORT AC_FILE RSP_FILE RP_FILE [PROCESSES]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    int procs = argc > 5 ? atoi(argv[5]) : 1;
    load(argv[2], 0);
    load(argv[3], 1);
    load(argv[4], 2);
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lfd, 4096) != 0) {
        perror("bind/listen");
        return 2;
    }
    /* one line once listening, so a caller can wait for it instead of polling */
    printf("listening on port %d\n", port);
    fflush(stdout);
    for (int i = 1; i < procs; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL); /* go with the parent */
            serve(lfd);
            return 0;
        }
        if (pid < 0) {
            perror("fork");
            return 2;
        }
    }
    serve(lfd);
    return 0;
}
