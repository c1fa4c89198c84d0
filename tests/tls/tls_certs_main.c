/* tls-certs DIR: the test certificate set of tls_certs.h, in DIR. */
#include <stdio.h>
#include <string.h>

#include "tests/tls/tls_certs.h"

int main(int argc, char **argv)
{
	if (argc != 2 || !strcmp(argv[1], "--help")) {
		fprintf(stderr, "usage: tls-certs DIR\n"
			"Makes a throwaway CA and certificates in DIR (see tests/tls/tls_certs.h).\n");
		return argc == 2 ? 0 : 2;
	}
	int r = tls_make_set(argv[1]);

	if (r)
		fprintf(stderr, "tls-certs: cannot make the certificates in %s (%d)\n", argv[1], r);
	return r ? 1 : 0;
}
