package auth

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"fmt"
	"hash"
)

// TLSServerEndPoint returns the tls-server-end-point channel binding data
// of the server certificate cert (RFC 5929 section 4.1): its hash with the
// hash function of its signature algorithm, SHA-256 when that is MD5 or
// SHA-1. The result is what Options.TLSServerEndPoint expects; compute it
// once per certificate, not per connection.
func TLSServerEndPoint(cert *x509.Certificate) ([]byte, error) {
	if cert == nil {
		return nil, errors.New("auth: tls-server-end-point: nil certificate")
	}
	var h hash.Hash
	switch cert.SignatureAlgorithm {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1,
		x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.ECDSAWithSHA256:
		h = sha256.New()
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		h = sha512.New384()
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		h = sha512.New()
	default:
		// Ed25519 and others: RFC 5929 defines no hash, and PostgreSQL
		// refuses channel binding for them too.
		return nil, fmt.Errorf("auth: tls-server-end-point: undefined for certificate signature algorithm %v", cert.SignatureAlgorithm)
	}
	h.Write(cert.Raw)
	return h.Sum(nil), nil
}
