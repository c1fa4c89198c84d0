/* A TCP proxy that cuts one connection at a given byte: see cutproxy.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench/cutproxy.h"

#define MAX_CONNS 64

struct conn {
	struct cut_proxy *p;
	int src, dst;
	uint64_t cut_at;	/* UINT64_MAX: never */
	pthread_t fwd, back;
	bool running;
};

struct cut_proxy {
	int lfd;
	struct sockaddr_in dest;
	unsigned int which;
	uint64_t at;
	atomic_bool stop, cut;
	pthread_t acceptor;
	pthread_mutex_t lock;
	struct conn conns[MAX_CONNS];
	unsigned int nr;
};

static void *back_thread(void *arg)
{
	struct conn *c = arg;
	char buf[65536];
	ssize_t n;

	while ((n = recv(c->dst, buf, sizeof(buf), 0)) > 0)
		if (send(c->src, buf, (size_t)n, MSG_NOSIGNAL) != n)
			break;
	shutdown(c->src, SHUT_WR);
	return NULL;
}

/* Source to destination, up to the cut; then the source gets a reset
 * (SO_LINGER 0) and the destination an end of stream. */
static void *fwd_thread(void *arg)
{
	struct conn *c = arg;
	char buf[65536];
	uint64_t done = 0;
	bool cut = false;

	while (!cut) {
		size_t want = sizeof(buf);

		if (c->cut_at - done < want)
			want = (size_t)(c->cut_at - done);
		ssize_t n = want ? recv(c->src, buf, want, 0) : 0;

		if (n <= 0 && want)
			break;
		if (n > 0 && send(c->dst, buf, (size_t)n, MSG_NOSIGNAL) != n)
			break;
		done += (uint64_t)(n > 0 ? n : 0);
		cut = done == c->cut_at;
	}
	if (cut)
		atomic_store(&c->p->cut, true);
	shutdown(c->dst, cut ? SHUT_RDWR : SHUT_WR);
	pthread_join(c->back, NULL);
	if (cut) {
		/* a reset, now: what the source sends next fails at once */
		struct linger lg = { 1, 0 };

		setsockopt(c->src, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(c->src);
		c->src = -1;
	}
	return NULL;
}

static void start_conn(struct cut_proxy *p, int src)
{
	int dst = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (dst < 0 || connect(dst, (struct sockaddr *)&p->dest, sizeof(p->dest)) || p->nr == MAX_CONNS) {
		close(src);
		if (dst >= 0)
			close(dst);
		return;
	}
	pthread_mutex_lock(&p->lock);
	struct conn *c = &p->conns[p->nr];

	*c = (struct conn){ .p = p, .src = src, .dst = dst, .cut_at = p->nr == p->which ? p->at : UINT64_MAX };
	if (!pthread_create(&c->back, NULL, back_thread, c)) {
		if (!pthread_create(&c->fwd, NULL, fwd_thread, c)) {
			c->running = true;
			p->nr++;
		} else {
			shutdown(dst, SHUT_RDWR);
			pthread_join(c->back, NULL);
		}
	}
	if (!c->running) {
		close(src);
		close(dst);
	}
	pthread_mutex_unlock(&p->lock);
}

static void *acceptor_thread(void *arg)
{
	struct cut_proxy *p = arg;

	while (!atomic_load(&p->stop)) {
		struct pollfd pfd = { .fd = p->lfd, .events = POLLIN };

		if (poll(&pfd, 1, 50) <= 0)
			continue;
		int fd = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC);

		if (fd >= 0)
			start_conn(p, fd);
	}
	return NULL;
}

int cut_proxy_start(const char *dest, unsigned int which, uint64_t at, struct cut_proxy **out, char *uri,
		    size_t urilen)
{
	struct cut_proxy *p = calloc(1, sizeof(*p));
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t salen = sizeof(sa);
	unsigned int port;

	if (!p)
		return -ENOMEM;
	if (sscanf(dest, "tcp:127.0.0.1:%u", &port) != 1) {
		free(p);
		return -EINVAL;
	}
	p->dest = sa;
	p->dest.sin_port = htons((uint16_t)port);
	p->which = which;
	p->at = at;
	pthread_mutex_init(&p->lock, NULL);
	p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(p->lfd, 16) ||
	    getsockname(p->lfd, (struct sockaddr *)&sa, &salen) ||
	    pthread_create(&p->acceptor, NULL, acceptor_thread, p)) {
		int e = errno ? errno : EIO;

		if (p->lfd >= 0)
			close(p->lfd);
		free(p);
		return -e;
	}
	snprintf(uri, urilen, "tcp:127.0.0.1:%u", (unsigned int)ntohs(sa.sin_port));
	*out = p;
	return 0;
}

bool cut_proxy_did_cut(struct cut_proxy *p)
{
	return atomic_load(&p->cut);
}

void cut_proxy_stop(struct cut_proxy *p)
{
	if (!p)
		return;
	atomic_store(&p->stop, true);
	pthread_join(p->acceptor, NULL);
	for (unsigned int i = 0; i < p->nr; i++) {
		struct conn *c = &p->conns[i];

		int src = __atomic_load_n(&c->src, __ATOMIC_ACQUIRE);

		if (src >= 0)
			shutdown(src, SHUT_RDWR);
		shutdown(c->dst, SHUT_RDWR);
		pthread_join(c->fwd, NULL);
		if (c->src >= 0)
			close(c->src);
		close(c->dst);
	}
	close(p->lfd);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
