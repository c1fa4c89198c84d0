/* ring/socket.c — socket helpers shared by listen and connect: buffer and
 * option tuning, name resolution, unix socket addresses.
 * See ring.h for the contract and docs/transport.md for the design.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "ring/ring-int.h"

/* ------------------------------------------------------ socket helpers */

void ring_tune_socket(int fd, int family)
{
	int one = 1, size = RING_SOCKBUF;

	/* Best effort: the kernel clamps these to net.core.[wr]mem_max, and a
	 * smaller buffer costs throughput, never correctness.  They must be set
	 * before connect()/listen(): the receive buffer size decides the TCP
	 * window scale offered in the SYN, and accepted sockets inherit the
	 * listener's sizes. */
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	/* Records are handed over whole; Nagle would only hold back the small
	 * ones (a lone header, the destination's final status) waiting for
	 * the peer's delayed ACK. */
	if (family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* gai, when not NULL, receives getaddrinfo()'s own code for messages. */
int ring_resolve(const struct ring_uri *uri, bool passive, struct addrinfo **res, int *gai)
{
	/* No AI_ADDRCONFIG: glibc ignores loopback when deciding which
	 * families are "configured", which would make tcp:[::1]:PORT fail
	 * on hosts with only a loopback IPv6 address. */
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_protocol = IPPROTO_TCP,
		.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0),
	};
	char host[sizeof(uri->host)];
	unsigned port;
	int ret;

	ret = ring_uri_host(uri, host, sizeof(host));
	if (ret)
		return ret;
	if (strnlen(uri->port, sizeof(uri->port)) == sizeof(uri->port) ||
	    ring_parse_port(uri->port, &port))
		return -EINVAL;
	if (!passive && port == 0)
		return -EINVAL;

	ret = getaddrinfo(host, uri->port, &hints, res);
	if (gai)
		*gai = ret;
	switch (ret) {
	case 0:
		return 0;
	case EAI_SYSTEM:
		return errno ? -errno : -EIO;
	case EAI_MEMORY:
		return -ENOMEM;
	case EAI_AGAIN:
		return -EAGAIN;
	case EAI_SERVICE:
	case EAI_BADFLAGS:
	case EAI_FAMILY:
	case EAI_SOCKTYPE:
		return -EINVAL;
	default:		/* EAI_NONAME, EAI_NODATA, EAI_FAIL, ... */
		return -EHOSTUNREACH;
	}
}

int ring_uri_resolve(const struct ring_uri *uri, bool passive, char *err, size_t errlen)
{
	struct addrinfo *res = NULL;
	int gai = 0, ret;

	if (uri->kind != RING_URI_TCP)
		return 0;
	ret = ring_resolve(uri, passive, &res, &gai);
	if (!ret)
		freeaddrinfo(res);
	else if (gai && gai != EAI_SYSTEM)
		snprintf(err, errlen, "cannot resolve host '%s': %s", uri->host, gai_strerror(gai));
	else
		snprintf(err, errlen, "cannot resolve host '%s' (port %s): %s", uri->host, uri->port,
			 strerror(-ret));
	return ret;
}

int ring_unix_addr(const char *path, size_t pathmax, struct sockaddr_un *sa, socklen_t *salen)
{
	size_t len = strnlen(path, pathmax);

	if (!len)
		return -EINVAL;
	if (len == pathmax || len >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, path, len + 1);
	*salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
	return 0;
}
