/* bench/cutproxy.h — a TCP proxy that cuts one connection at a given byte:
 * fault injection for the RAM path (bench/ramlink.c, its tests and the
 * cut soak).  Each connection accepted is forwarded to the destination
 * both ways; connection number `which` (0 = the first accepted: a
 * migration's main connection, then its RAM channels in order) is cut
 * after `at` bytes from the source: the destination sees the stream end
 * there, the source gets a reset. */
#ifndef KMIG_BENCH_CUTPROXY_H
#define KMIG_BENCH_CUTPROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cut_proxy;

/* dest: "tcp:127.0.0.1:PORT".  uri gets the proxy's own address. */
int cut_proxy_start(const char *dest, unsigned int which, uint64_t at, struct cut_proxy **out, char *uri,
		    size_t urilen);
/* Whether the cut happened (the connection carried `at` bytes). */
bool cut_proxy_did_cut(struct cut_proxy *p);
/* Closes everything still open and joins every thread. */
void cut_proxy_stop(struct cut_proxy *p);

#endif
