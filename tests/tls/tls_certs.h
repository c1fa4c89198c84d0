/* tests/tls/tls_certs.h — throwaway CAs and certificates for the TLS
 * tests, made at test time (GnuTLS's x509 API; no key lives in the tree).
 *
 * tls_make_set(ROOT) lays out, in QEMU's file names:
 *   ROOT/server           ca-cert.pem, server-cert.pem, server-key.pem
 *                         (CN=kmig-dst, SAN localhost and 127.0.0.1)
 *   ROOT/client           ca-cert.pem, client-cert.pem, client-key.pem
 *                         (O=kmig, CN=kmig-src)
 *   ROOT/client-nocert    ca-cert.pem only
 *   ROOT/client-other-ca  a client certificate from another CA
 *   ROOT/server-other-ca  a server certificate from another CA
 *   ROOT/server-expired   a server certificate that expired an hour ago
 *   ROOT/ca, ROOT/other-ca  the CAs (with their keys)
 */
#ifndef KMIG_TESTS_TLS_CERTS_H
#define KMIG_TESTS_TLS_CERTS_H

#include <stdbool.h>
#include <time.h>

#define TLS_SERVER_CN "kmig-dst"
#define TLS_CLIENT_CN "kmig-src"
/* the client's identity as QEMU's authz-simple compares it:
 * gnutls_x509_crt_get_dn(), attributes in the order of the certificate */
#define TLS_CLIENT_DN "O=kmig,CN=" TLS_CLIENT_CN

struct tls_cert_spec {
	const char *cn, *org;
	bool ca, server;
	const char *dns, *ip;		/* subjectAltName, or NULL */
	time_t valid_from, valid_until;	/* seconds from now */
};

/* PREFIX-cert.pem and PREFIX-key.pem in dir, signed by issuer_dir's CA
 * (NULL: self-signed). 0 or -errno. */
int tls_make_cert(const char *dir, const char *issuer_dir, const char *prefix, const struct tls_cert_spec *s);
int tls_copy_ca(const char *from_dir, const char *to_dir);
int tls_make_set(const char *root);

#endif
