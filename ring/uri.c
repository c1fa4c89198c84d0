/* ring/uri.c — URIs: parsing and formatting tcp:HOST:PORT and unix:PATH.
 * See ring.h for the contract and docs/transport.md for the design.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "ring/ring-int.h"

/* ----------------------------------------------------------------- URIs */

/* Strict decimal 0..65535: digits only, no sign, no spaces, no junk. */
int ring_parse_port(const char *s, unsigned *port)
{
	unsigned v = 0;
	size_t n = 0;

	for (; s[n]; n++) {
		if (n >= 5 || s[n] < '0' || s[n] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(s[n] - '0');
	}
	if (!n || v > 65535)
		return -EINVAL;
	*port = v;
	return 0;
}

static bool ring_host_char_ok(char c)
{
	return isalnum((unsigned char)c) || c == '-' || c == '.' || c == '_';
}

/* "[...]" must hold an IPv6 literal, optionally with a %zone suffix. */
static bool ring_v6_literal_ok(const char *s)
{
	char addr[INET6_ADDRSTRLEN];
	struct in6_addr a;
	const char *zone = strchr(s, '%');
	size_t alen = zone ? (size_t)(zone - s) : strlen(s);

	if (!alen || alen >= sizeof(addr))
		return false;
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	if (inet_pton(AF_INET6, addr, &a) != 1)
		return false;
	if (zone) {
		if (!zone[1])
			return false;
		for (const char *p = zone + 1; *p; p++)
			if (!ring_host_char_ok(*p))
				return false;
	}
	return true;
}

static int ring_parse_tcp(const char *text, const char *rest, struct ring_uri *u,
			  char *err, size_t errlen)
{
	const char *host, *hend, *port;
	size_t hlen;
	unsigned portnum;

	if (*rest == '[') {
		host = rest + 1;
		hend = strchr(host, ']');
		if (!hend) {
			kmig_set_err(err, errlen, "unterminated '[' in '%s' (%s)", text,
				     RING_URI_EXPECTED);
			return -EINVAL;
		}
		if (hend[1] != ':') {
			if (hend[1])
				kmig_set_err(err, errlen, "unexpected '%c' after ']' in '%s' (%s)",
					     hend[1], text, RING_URI_EXPECTED);
			else
				kmig_set_err(err, errlen, "missing port in '%s' (%s)", text,
					     RING_URI_EXPECTED);
			return -EINVAL;
		}
		port = hend + 2;
	} else {
		host = rest;
		hend = strchr(host, ':');
		if (!hend) {
			kmig_set_err(err, errlen, "missing port in '%s' (%s)", text,
				     RING_URI_EXPECTED);
			return -EINVAL;
		}
		port = hend + 1;
		if (strchr(port, ':')) {
			kmig_set_err(err, errlen,
				     "too many ':' in '%s' (write IPv6 addresses in brackets: tcp:[::1]:PORT)",
				     text);
			return -EINVAL;
		}
	}

	hlen = (size_t)(hend - host);
	if (!hlen) {
		kmig_set_err(err, errlen, "empty host in '%s' (%s)", text, RING_URI_EXPECTED);
		return -EINVAL;
	}
	if (hlen >= sizeof(u->host)) {
		kmig_set_err(err, errlen, "host too long in '%s' (%zu bytes, at most %zu)", text,
			     hlen, sizeof(u->host) - 1);
		return -EINVAL;
	}
	memcpy(u->host, host, hlen);
	u->host[hlen] = '\0';

	if (*rest == '[') {
		if (!ring_v6_literal_ok(u->host)) {
			kmig_set_err(err, errlen, "bad IPv6 address '[%s]' in '%s'", u->host, text);
			return -EINVAL;
		}
	} else {
		for (size_t i = 0; i < hlen; i++) {
			if (!ring_host_char_ok(u->host[i])) {
				kmig_set_err(err, errlen, "bad character '%c' in host '%s' of '%s'",
					     u->host[i], u->host, text);
				return -EINVAL;
			}
		}
	}

	if (ring_parse_port(port, &portnum)) {
		kmig_set_err(err, errlen, "bad port '%s' in '%s' (expected a decimal number 0..65535)",
			     port, text);
		return -EINVAL;
	}
	/* canonical form: "04444" and "4444" are the same port */
	snprintf(u->port, sizeof(u->port), "%u", portnum);
	u->kind = RING_URI_TCP;
	return 0;
}

static int ring_parse_unix(const char *text, const char *path, struct ring_uri *u,
			   char *err, size_t errlen)
{
	size_t len = strlen(path);

	if (!len) {
		kmig_set_err(err, errlen, "empty socket path in '%s' (expected unix:PATH)", text);
		return -EINVAL;
	}
	/* sun_path must also hold the terminating NUL */
	if (len >= sizeof(u->path)) {
		kmig_set_err(err, errlen,
			     "unix socket path too long (%zu bytes, at most %zu): '%s' (%s)",
			     len, sizeof(u->path) - 1, path, strerror(ENAMETOOLONG));
		return -EINVAL;
	}
	memcpy(u->path, path, len + 1);
	u->kind = RING_URI_UNIX;
	return 0;
}

int ring_uri_parse(const char *text, struct ring_uri *uri, char *err, size_t errlen)
{
	struct ring_uri u;
	const char *colon;
	size_t slen;
	int ret;

	if (err && errlen)
		err[0] = '\0';
	if (!uri) {
		kmig_set_err(err, errlen, "no URI to parse into");
		return -EINVAL;
	}
	if (!text || !*text) {
		kmig_set_err(err, errlen, "empty migration URI (%s)", RING_URI_EXPECTED);
		return -EINVAL;
	}
	colon = strchr(text, ':');
	if (!colon) {
		kmig_set_err(err, errlen, "missing scheme in URI '%s' (%s)", text, RING_URI_EXPECTED);
		return -EINVAL;
	}

	memset(&u, 0, sizeof(u));
	slen = (size_t)(colon - text);
	if (slen == 3 && !memcmp(text, "tcp", 3)) {
		ret = ring_parse_tcp(text, colon + 1, &u, err, errlen);
	} else if (slen == 4 && !memcmp(text, "unix", 4)) {
		ret = ring_parse_unix(text, colon + 1, &u, err, errlen);
	} else if ((slen == 4 && !memcmp(text, "exec", 4)) || (slen == 2 && !memcmp(text, "fd", 2))) {
		kmig_set_err(err, errlen,
			     "'%.*s:' migration URIs are not supported by kmig (%s)",
			     (int)slen, text, RING_URI_EXPECTED);
		ret = -EINVAL;
	} else {
		kmig_set_err(err, errlen, "unsupported URI scheme '%.*s' (%s)",
			     slen > 32 ? 32 : (int)slen, text, RING_URI_EXPECTED);
		ret = -EINVAL;
	}
	if (ret)
		return ret;
	*uri = u;
	return 0;
}

int ring_uri_host(const struct ring_uri *uri, char *out, size_t outlen)
{
	size_t len = strnlen(uri->host, sizeof(uri->host));
	const char *h = uri->host;

	if (len == sizeof(uri->host))
		return -ENAMETOOLONG;
	if (len >= 2 && h[0] == '[' && h[len - 1] == ']') {
		h++;
		len -= 2;
	}
	if (!len || len >= outlen)
		return -EINVAL;
	memcpy(out, h, len);
	out[len] = '\0';
	return 0;
}

void ring_uri_format(const struct ring_uri *uri, char *buf, size_t len)
{
	int hlen, plen;
	bool bracket;

	if (!buf || !len)
		return;
	if (!uri) {
		buf[0] = '\0';
		return;
	}
	switch (uri->kind) {
	case RING_URI_TCP:
		/* strnlen: a hand-built struct need not be NUL-terminated */
		hlen = (int)strnlen(uri->host, sizeof(uri->host));
		plen = (int)strnlen(uri->port, sizeof(uri->port));
		bracket = memchr(uri->host, ':', (size_t)hlen) && uri->host[0] != '[';
		snprintf(buf, len, bracket ? "tcp:[%.*s]:%.*s" : "tcp:%.*s:%.*s",
			 hlen, uri->host, plen, uri->port);
		break;
	case RING_URI_UNIX:
		snprintf(buf, len, "unix:%.*s", (int)strnlen(uri->path, sizeof(uri->path)),
			 uri->path);
		break;
	default:
		snprintf(buf, len, "invalid:");
		break;
	}
}
