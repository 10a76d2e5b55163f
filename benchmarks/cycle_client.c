/*
 * cycle_client: the SCP-side association-cycle load generator, in C.
 *
 *   cycle_client HOST PORT CLIENTS WARMUP_S DURATION_S TIMEOUT_S RQ_FILE ECHO_FILE RELEASE_FILE
 *
 * The cycle and the checks of benchmarks/raw_client.py (EchoCycle), without
 * a Python interpreter behind them, so that the generator takes as little
 * of a shared machine's CPU as it can.  CLIENTS cycle loops run on one
 * thread around epoll (Linux).  Each cycle:
 *
 *   non-blocking socket, TCP_NODELAY, connect to HOST (numeric IPv4 or IPv6)
 *   write RQ_FILE      (the A-ASSOCIATE-RQ encoded once by aiodicom)
 *   read an A-ASSOCIATE-AC accepting presentation context 1 (Verification)
 *   write ECHO_FILE    (the C-ECHO-RQ, message ID 1)
 *   read P-DATA-TF PDVs on context 1 carrying one whole command set (bit 0
 *     set on every fragment, bit 1 on the last; PS3.8 E.2): a C-ECHO-RSP,
 *     (0000,0100) = 0x8030, answering (0000,0120) = 1 with (0000,0900) = 0
 *   write RELEASE_FILE (the A-RELEASE-RQ)
 *   read an A-RELEASE-RP, close (PS3.8 7.2: the requestor closes)
 *
 * PDUs are framed by their 6-byte header (PS3.8 9.3.1: type, reserved,
 * 32-bit big-endian length); a body above MAX_BODY is an error.  Anything
 * but the cycle above (A-ABORT, A-ASSOCIATE-RJ, another PDU type, a context
 * not accepted, a bad or failed C-ECHO-RSP, a PDU after the A-RELEASE-RP, a
 * close before it, a connect error, no answer within TIMEOUT_S) fails the
 * cycle with a message that says so, worded as raw_client words it; the
 * client then waits ERROR_PAUSE before its next cycle.  A cycle's latency
 * runs (CLOCK_MONOTONIC) from just before its socket is made and connected
 * to just after close().
 *
 * The window is that of benchmarks/common.py (Window, run_window): the
 * warm-up lasts WARMUP_S and until every client finished one cycle (at most
 * MAX_WARMUP_EXTENSION longer); the window then lasts DURATION_S; a cycle
 * counts when it completes inside it; no cycle starts after it; cycles
 * still running get STRAGGLER_GRACE to finish, then are cut (stragglers,
 * not errors).  Output on stdout, one flushed line each:
 *
 *   OPEN                    the window opened (the caller samples CPU now)
 *   CLOSE                   the window ended (and now)
 *   STATS cycles_total=N errors=N errors_total=N stragglers=N warmup_effective_s=S
 *   ERR COUNT MESSAGE       per distinct error message (at most 8 kept)
 *   LAT MS                  per cycle counted, in completion order
 *   END
 *
 * Exit status 0 after END; 2 on bad arguments or set-up failure (stderr).
 * benchmarks/c_client.py builds it, feeds it and turns this into the
 * BENCH_RESULT line of the other generators.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_BODY (1UL << 20)          /* largest PDU body accepted */
#define MAX_CMD (1UL << 20)           /* largest command set accepted */
#define ERROR_PAUSE 0.01              /* after a failed cycle (no hot loop) */
#define STRAGGLER_GRACE 15.0          /* = benchmarks.common.STRAGGLER_GRACE */
#define MAX_WARMUP_EXTENSION 20.0     /* = benchmarks.common.MAX_WARMUP_EXTENSION */
#define MAX_SAMPLES 8                 /* distinct error messages kept */
#define MSG_LEN 200                   /* raw_client cuts its messages there too */
#define FD_SLACK 16                   /* stdio, epoll, what libc may open */

enum phase { P_IDLE, P_CONNECTING, P_AC, P_RSP, P_RP, P_RELEASED, P_PAUSE };
/* raw_client's state numbers, for "connection closed in state N" */
static const int STATE_NO[] = {[P_CONNECTING] = 0, [P_AC] = 0, [P_RSP] = 1, [P_RP] = 2, [P_RELEASED] = 3};

struct client {
    int fd;
    enum phase phase;
    uint32_t gen;        /* bumped per socket: stale epoll events are ignored */
    uint32_t events;     /* epoll interest registered */
    int warmed;          /* finished its first cycle */
    double t0;           /* cycle start */
    double due;          /* deadline (in a cycle) or end of the pause */
    const unsigned char *out[3]; /* unsent PDUs, in order */
    size_t out_len[3];
    int out_n;
    size_t out_off;      /* bytes of out[0] already sent */
    unsigned char *in;   /* received bytes not yet a whole PDU */
    size_t in_len, in_cap;
    unsigned char *cmd;  /* command set fragments so far */
    size_t cmd_len, cmd_cap;
};

struct pdu { unsigned char *data; size_t len; };

static struct pdu rq, echo, release;
static struct sockaddr_storage peer;
static socklen_t peer_len;
static char peer_text[128];
static int ep = -1;
static struct client *clients;
static int nclients;
static double timeout_s;

/* the window (benchmarks.common.Window) */
static double t_start, warmup_until, warm_end = INFINITY, t_end = INFINITY;
static int warmed;
static unsigned long cycles_total, errors, errors_total, stragglers;
static double *lat;
static size_t lat_n, lat_cap;
static char samples[MAX_SAMPLES][MSG_LEN + 1];
static unsigned long sample_count[MAX_SAMPLES];
static int nsamples;
static double next_timer = INFINITY; /* earliest client deadline/pause end (lower bound) */

/* (no libm: the build is a plain `cc -O2 FILE`) */
static double min2(double a, double b) { return a < b ? a : b; }

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("cycle_client: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q)
        die("out of memory (%zu bytes)", n);
    return q;
}

static double now(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        die("clock_gettime: %s", strerror(errno));
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void say(const char *line)
{
    /* the caller reads these as they come: one write per line */
    fputs(line, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

static void load(const char *path, struct pdu *p)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || fstat(fileno(f), &st) != 0)
        die("%s: %s", path, strerror(errno));
    p->len = (size_t)st.st_size;
    if (p->len < 6)
        die("%s: not a PDU (%zu bytes)", path, p->len);
    p->data = xrealloc(NULL, p->len);
    if (fread(p->data, 1, p->len, f) != p->len)
        die("cannot read %s", path);
    fclose(f);
}

static double number(const char *text, const char *what)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= 0) || isinf(v))
        die("%s: not a non-negative number: %s", what, text);
    return v;
}

/* ------------------------------------------------------------ recording */

static void record_error(double t1, const char *msg)
{
    errors_total++;
    if (warm_end <= t1 && t1 <= t_end)
        errors++;
    for (int i = 0; i < nsamples; i++) {
        if (strcmp(samples[i], msg) == 0) {
            sample_count[i]++;
            return;
        }
    }
    if (nsamples < MAX_SAMPLES) {
        snprintf(samples[nsamples], sizeof samples[0], "%s", msg);
        sample_count[nsamples++] = 1;
    }
}

static void record_ok(double t0, double t1)
{
    cycles_total++;
    if (warm_end <= t1 && t1 <= t_end) {
        if (lat_n == lat_cap) {
            lat_cap = lat_cap ? 2 * lat_cap : 65536;
            lat = xrealloc(lat, lat_cap * sizeof *lat);
        }
        lat[lat_n++] = t1 - t0;
    }
}

/* ------------------------------------------------------------- a cycle */

static void start_cycle(struct client *c);

static void arm(double when)
{
    if (when < next_timer)
        next_timer = when;
}

static void set_events(struct client *c, uint32_t events)
{
    if (events == c->events)
        return;
    struct epoll_event ev = {.events = events,
                             .data.u64 = ((uint64_t)c->gen << 32) | (uint64_t)(c - clients)};
    if (epoll_ctl(ep, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl: %s", strerror(errno)); /* cannot happen on a valid socket */
    c->events = events;
}

static void close_socket(struct client *c)
{
    if (c->fd >= 0) {
        /* close() also drops the socket from the epoll set (no dup'd fds).
         * Its error (EINTR, EIO) is not acted on: Linux releases the
         * descriptor either way, and the cycle's outcome is already known. */
        (void)close(c->fd);
        c->fd = -1;
    }
    c->events = 0;
    c->gen++;
    c->out_n = 0;
    c->out_off = 0;
    c->in_len = 0;
    c->cmd_len = 0;
}

/* The client's cycle is over (success or failure): count it, then the next one or rest. */
static void finished(struct client *c, int ok, const char *msg)
{
    close_socket(c);
    double t1 = now();
    if (ok)
        record_ok(c->t0, t1);
    else
        record_error(t1, msg);
    if (!c->warmed) {
        c->warmed = 1;
        warmed++;
    }
    if (!ok) {
        c->phase = P_PAUSE;
        c->due = t1 + ERROR_PAUSE;
        arm(c->due);
    } else if (t1 < t_end) {
        start_cycle(c);
    } else {
        c->phase = P_IDLE;
    }
}

static void fail(struct client *c, const char *fmt, ...)
{
    char msg[MSG_LEN + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    finished(c, 0, msg);
}

static void closed_early(struct client *c, const char *why)
{
    fail(c, "connection closed in state %d: %s", STATE_NO[c->phase], why);
}

/* Send what is queued; returns 0 while the cycle goes on, -1 once it failed. */
static int flush(struct client *c)
{
    while (c->out_n > 0) {
        ssize_t n = send(c->fd, c->out[0] + c->out_off, c->out_len[0] - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            closed_early(c, strerror(errno));
            return -1;
        }
        c->out_off += (size_t)n;
        if (c->out_off == c->out_len[0]) {
            c->out_off = 0;
            c->out_n--;
            memmove(c->out, c->out + 1, sizeof c->out[0] * (size_t)c->out_n);
            memmove(c->out_len, c->out_len + 1, sizeof c->out_len[0] * (size_t)c->out_n);
        }
    }
    set_events(c, c->out_n ? EPOLLIN | EPOLLOUT : EPOLLIN);
    return 0;
}

static int write_pdu(struct client *c, const struct pdu *p)
{
    /* each PDU goes once per cycle, so three slots always suffice */
    c->out[c->out_n] = p->data;
    c->out_len[c->out_n++] = p->len;
    return c->out_n == 1 ? flush(c) : 0;
}

static void start_cycle(struct client *c)
{
    c->t0 = now();
    c->due = c->t0 + timeout_s;
    arm(c->due);
    c->phase = P_CONNECTING;
    c->fd = socket(peer.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        fail(c, "socket: %s", strerror(errno));
        return;
    }
    int one = 1;
    if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
        fail(c, "setsockopt TCP_NODELAY: %s", strerror(errno));
        return;
    }
    /* EINTR: a non-blocking connect goes on asynchronously, as EINPROGRESS */
    if (connect(c->fd, (struct sockaddr *)&peer, peer_len) != 0 && errno != EINPROGRESS && errno != EINTR) {
        fail(c, "connect to %s: %s", peer_text, strerror(errno));
        return;
    }
    /* connected or not yet: writable (or an error) is when to look */
    set_events(c, EPOLLOUT);
}

static void connected(struct client *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err) {
        fail(c, "connect to %s: %s", peer_text, strerror(err));
        return;
    }
    c->phase = P_AC;
    write_pdu(c, &rq);
}

static uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void optional(char *buf, size_t size, int have, unsigned value)
{
    if (have)
        snprintf(buf, size, "%u", value);
    else
        snprintf(buf, size, "None");
}

/* raw_client._check_echo_rsp: NULL if the command set is a successful C-ECHO-RSP to ID 1. */
static const char *check_echo_rsp(const unsigned char *cmd, size_t end, char *msg, size_t size)
{
    int have_field = 0, have_id = 0, have_status = 0;
    unsigned field = 0, id = 0, status = 0;
    size_t off = 0;
    while (off + 8 <= end) {
        unsigned group = le16(cmd + off), elem = le16(cmd + off + 2);
        uint32_t length = le32(cmd + off + 4);
        off += 8;
        if (length > end - off)
            return "truncated command set";
        if (group != 0) {
            snprintf(msg, size, "command set element (%04X,%04X)", group, elem);
            return msg;
        }
        if (length == 2) {
            unsigned v = le16(cmd + off);
            if (elem == 0x0100)
                field = v, have_field = 1;
            else if (elem == 0x0120)
                id = v, have_id = 1;
            else if (elem == 0x0900)
                status = v, have_status = 1;
        }
        off += length;
    }
    if (off != end)
        return "truncated command set";
    char v[16];
    if (!have_field || field != 0x8030) {
        optional(v, sizeof v, have_field, field);
        snprintf(msg, size, "expected C-ECHO-RSP, got command field %s", v);
        return msg;
    }
    if (!have_id || id != 1) {
        optional(v, sizeof v, have_id, id);
        snprintf(msg, size, "C-ECHO-RSP answers message ID %s, not 1", v);
        return msg;
    }
    if (!have_status || status != 0) {
        optional(v, sizeof v, have_status, status);
        snprintf(msg, size, "C-ECHO status %s", v);
        return msg;
    }
    return NULL;
}

/* One whole PDU (raw_client.EchoCycle._pdu).  Returns 0 to go on, -1 once the cycle failed. */
static int on_pdu(struct client *c, unsigned type, const unsigned char *body, size_t len)
{
    if (type == 0x07) {
        if (len >= 4)
            fail(c, "A-ABORT source %u reason %u", body[2], body[3]);
        else
            fail(c, "A-ABORT");
        return -1;
    }
    switch (c->phase) {
    case P_AC: {
        if (type == 0x03) {
            /* Python's tuple(body[1:4]) */
            if (len >= 4)
                fail(c, "A-ASSOCIATE-RJ (%u, %u, %u)", body[1], body[2], body[3]);
            else if (len == 3)
                fail(c, "A-ASSOCIATE-RJ (%u, %u)", body[1], body[2]);
            else if (len == 2)
                fail(c, "A-ASSOCIATE-RJ (%u,)", body[1]);
            else
                fail(c, "A-ASSOCIATE-RJ ()");
            return -1;
        }
        if (type != 0x02) {
            fail(c, "PDU type %u instead of A-ASSOCIATE-AC", type);
            return -1;
        }
        /* version, reserved, 2 x AE, 32 reserved (PS3.8 Table 9-17), then items */
        size_t off = 68;
        int result = -1;
        while (off + 4 <= len) {
            unsigned itype = body[off];
            size_t ilen = (size_t)body[off + 2] << 8 | body[off + 3];
            if (itype == 0x21 && ilen >= 4 && off + 7 <= len && body[off + 4] == 1) {
                result = body[off + 6];
                break;
            }
            off += 4 + ilen;
        }
        if (result < 0) {
            fail(c, "A-ASSOCIATE-AC without presentation context 1");
            return -1;
        }
        if (result != 0) {
            fail(c, "Verification context not accepted (result %d)", result);
            return -1;
        }
        c->phase = P_RSP;
        return write_pdu(c, &echo);
    }
    case P_RSP: {
        if (type != 0x04) {
            fail(c, "PDU type %u instead of P-DATA-TF", type);
            return -1;
        }
        size_t off = 0;
        while (off < len) {
            if (len - off < 6) {
                fail(c, "malformed PDU: PDV header cut at %zu bytes", len - off);
                return -1;
            }
            uint32_t length = be32(body + off);
            unsigned ctx = body[off + 4], ctrl = body[off + 5];
            if (length < 2 || length > len - off - 4) {
                fail(c, "PDV length %u does not fit its PDU", (unsigned)length);
                return -1;
            }
            if (ctx != 1 || !(ctrl & 1) || c->phase != P_RSP) {
                /* (after the last fragment, a further PDV is unexpected too) */
                fail(c, "unexpected PDV (context %u, control 0x%02X)", ctx, ctrl);
                return -1;
            }
            size_t frag = length - 2;
            if (frag > MAX_CMD - c->cmd_len) {
                fail(c, "command set larger than %lu bytes", MAX_CMD);
                return -1;
            }
            if (c->cmd_len + frag > c->cmd_cap) {
                c->cmd_cap = c->cmd_len + frag > 256 ? c->cmd_len + frag : 256;
                c->cmd = xrealloc(c->cmd, c->cmd_cap);
            }
            memcpy(c->cmd + c->cmd_len, body + off + 6, frag);
            c->cmd_len += frag;
            off += 4 + (size_t)length;
            if (ctrl & 2) {
                char buf[MSG_LEN + 1];
                const char *bad = check_echo_rsp(c->cmd, c->cmd_len, buf, sizeof buf);
                if (bad) {
                    fail(c, "%s", bad);
                    return -1;
                }
                c->phase = P_RP;
                if (write_pdu(c, &release) != 0)
                    return -1;
            }
        }
        return 0;
    }
    case P_RP:
        if (type != 0x06) {
            fail(c, "PDU type %u instead of A-RELEASE-RP", type);
            return -1;
        }
        c->phase = P_RELEASED;
        return 0;
    case P_RELEASED: /* more in the same read: raw_client goes on framing too */
        fail(c, "PDU type %u after A-RELEASE-RP", type);
        return -1;
    default:
        return 0; /* not reached: no socket is read in the other phases */
    }
}

/* Frame what came in; the cycle goes on (0), is over (-1). */
static int on_bytes(struct client *c, const unsigned char *data, size_t n)
{
    const unsigned char *p = data;
    size_t avail = n;
    if (c->in_len) { /* a partial PDU is waiting: append to it */
        if (c->in_len + n > c->in_cap) {
            c->in_cap = c->in_len + n;
            c->in = xrealloc(c->in, c->in_cap);
        }
        memcpy(c->in + c->in_len, data, n);
        c->in_len += n;
        p = c->in;
        avail = c->in_len;
    }
    size_t off = 0;
    while (avail - off >= 6) {
        unsigned type = p[off];
        uint32_t length = be32(p + off + 2);
        if (length > MAX_BODY) {
            fail(c, "PDU length %u above %lu", (unsigned)length, MAX_BODY);
            return -1;
        }
        if (avail - off - 6 < length)
            break;
        const unsigned char *body = p + off + 6;
        off += 6 + (size_t)length;
        if (on_pdu(c, type, body, length) != 0)
            return -1;
    }
    if (c->phase == P_RELEASED) {
        finished(c, 1, NULL);
        return -1;
    }
    /* keep the partial tail (if any) for the next read */
    size_t rest = avail - off;
    if (p == c->in) {
        memmove(c->in, c->in + off, rest);
    } else if (rest) {
        if (rest > c->in_cap) {
            c->in_cap = rest > 4096 ? rest : 4096;
            c->in = xrealloc(c->in, c->in_cap);
        }
        memcpy(c->in, p + off, rest);
    }
    c->in_len = rest;
    return 0;
}

static void readable(struct client *c)
{
    static unsigned char buf[65536];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n == 0) {
            closed_early(c, "EOF");
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            closed_early(c, strerror(errno));
            return;
        }
        if (on_bytes(c, buf, (size_t)n) != 0)
            return;
        if ((size_t)n < sizeof buf)
            return; /* drained; level-triggered epoll says if more comes */
    }
}

static void on_event(struct client *c, uint32_t events)
{
    if (c->phase == P_CONNECTING) {
        connected(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
        uint32_t gen = c->gen;
        readable(c);
        if (c->gen != gen)
            return; /* the cycle ended */
    }
    if ((events & EPOLLOUT) && c->out_n)
        flush(c);
}

/* Deadlines and pauses, when one may be due. */
static void timers(double t)
{
    if (t < next_timer)
        return;
    next_timer = INFINITY;
    for (int i = 0; i < nclients; i++) {
        struct client *c = &clients[i];
        if (c->phase == P_IDLE)
            continue;
        if (c->due <= t) {
            if (c->phase == P_PAUSE) {
                if (now() < t_end)
                    start_cycle(c);
                else
                    c->phase = P_IDLE;
            } else {
                fail(c, "timeout: no reply within %g s (state %d)", timeout_s, STATE_NO[c->phase]);
            }
        }
        if (c->phase != P_IDLE)
            arm(c->due);
    }
}

static void raise_fd_limit(int n)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)n + FD_SLACK;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        die("getrlimit: %s", strerror(errno));
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        rl.rlim_cur = (rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need) ? need : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            die("setrlimit RLIMIT_NOFILE: %s", strerror(errno));
        if (rl.rlim_cur < need)
            die("%d clients need %lu file descriptors; RLIMIT_NOFILE allows %lu (hard limit)", n,
                (unsigned long)need, (unsigned long)rl.rlim_max);
    }
}

int main(int argc, char **argv)
{
    if (argc != 10)
        die("usage: cycle_client HOST PORT CLIENTS WARMUP_S DURATION_S TIMEOUT_S RQ_FILE ECHO_FILE RELEASE_FILE");
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* go with the wrapper */
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
        die("signal: %s", strerror(errno));

    const char *host = argv[1], *port = argv[2];
    char *end;
    long n = strtol(argv[3], &end, 10);
    if (*end || end == argv[3] || n < 1 || n > 1000000)
        die("CLIENTS: not a positive integer: %s", argv[3]);
    nclients = (int)n;
    double warmup = number(argv[4], "WARMUP_S");
    double duration = number(argv[5], "DURATION_S");
    timeout_s = number(argv[6], "TIMEOUT_S");
    if (timeout_s <= 0)
        die("TIMEOUT_S must be above 0");
    load(argv[7], &rq);
    load(argv[8], &echo);
    load(argv[9], &release);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *ai;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0)
        die("%s port %s: %s (HOST must be a numeric IPv4 or IPv6 address)", host, port, gai_strerror(rc));
    memcpy(&peer, ai->ai_addr, ai->ai_addrlen);
    peer_len = ai->ai_addrlen;
    freeaddrinfo(ai);
    snprintf(peer_text, sizeof peer_text, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);

    raise_fd_limit(nclients);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1: %s", strerror(errno));
    clients = calloc((size_t)nclients, sizeof *clients);
    if (!clients)
        die("out of memory");

    enum { WARMUP, WINDOW, DRAIN } stage = WARMUP;
    double grace_until = INFINITY;
    t_start = now();
    warmup_until = t_start + warmup;
    for (int i = 0; i < nclients; i++) {
        clients[i].fd = -1;
        start_cycle(&clients[i]);
    }

    struct epoll_event events[256];
    for (;;) {
        double t = now();
        timers(t);
        if (stage == WARMUP && t >= warmup_until &&
            (warmed >= nclients || t >= warmup_until + MAX_WARMUP_EXTENSION)) {
            say("OPEN");
            warm_end = now();
            t_end = warm_end + duration;
            stage = WINDOW;
        }
        if (stage == WINDOW && t >= t_end) {
            say("CLOSE");
            grace_until = now() + STRAGGLER_GRACE;
            stage = DRAIN;
        }
        if (stage == DRAIN) {
            int busy = 0;
            for (int i = 0; i < nclients; i++) {
                if (clients[i].phase == P_PAUSE)
                    clients[i].phase = P_IDLE; /* no cycle starts after the window */
                busy += clients[i].phase != P_IDLE;
            }
            if (!busy)
                break;
            if (t >= grace_until) {
                for (int i = 0; i < nclients; i++) {
                    if (clients[i].phase != P_IDLE) {
                        close_socket(&clients[i]);
                        clients[i].phase = P_IDLE;
                        stragglers++;
                    }
                }
                break;
            }
        }
        /* sleep until the next thing due: a client timer or the stage's edge */
        double wake = next_timer;
        if (stage == WARMUP)
            wake = min2(wake, t < warmup_until ? warmup_until : warmup_until + MAX_WARMUP_EXTENSION);
        else if (stage == WINDOW)
            wake = min2(wake, t_end);
        else
            wake = min2(wake, grace_until);
        int ms = -1;
        if (wake != INFINITY) {
            double d = (wake - now()) * 1e3; /* rounded up: no spinning short of it */
            ms = d <= 0 ? 0 : d >= 60000 ? 60000 : (int)d + 1;
        }
        int k = epoll_wait(ep, events, 256, ms);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < k; i++) {
            uint64_t tag = events[i].data.u64;
            struct client *c = &clients[(uint32_t)tag];
            if (c->fd < 0 || c->gen != (uint32_t)(tag >> 32))
                continue; /* that socket is gone */
            on_event(c, events[i].events);
        }
    }

    printf("STATS cycles_total=%lu errors=%lu errors_total=%lu stragglers=%lu warmup_effective_s=%.9f\n",
           cycles_total, errors, errors_total, stragglers, warm_end - t_start);
    for (int i = 0; i < nsamples; i++)
        printf("ERR %lu %s\n", sample_count[i], samples[i]);
    for (size_t i = 0; i < lat_n; i++)
        printf("LAT %.6f\n", lat[i] * 1e3);
    printf("END\n");
    if (fflush(stdout) != 0 || ferror(stdout))
        die("writing the results: %s", strerror(errno));
    return 0;
}
