package fakewa

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"sync"
	"time"

	"go.mau.fi/libsignal/ecc"
	"go.mau.fi/whatsmeow/proto/waCert"
	"go.mau.fi/whatsmeow/util/keys"
	"google.golang.org/protobuf/proto"
)

// PKI is the fake's two roots of trust: the Noise certificate chain the
// client checks against whatsmeow.WACertPubKey, and a TLS certificate
// authority for the websocket and media hosts.
//
// whatsmeow.WACertPubKey is one variable for the whole process, so every
// fake server in a process shares one PKI (pitfall: two roots break each
// other's clients).
type PKI struct {
	// Root is the Noise root key; its public half is what the client
	// trusts (PHONEBRIDGE_FAKEWA_ROOT).
	Root *keys.KeyPair
	// Static is the server's Noise static key, certified by the chain.
	Static *keys.KeyPair
	// CertChain is the serialized waCert.CertChain sent in the handshake.
	CertChain []byte
	// CAPEM is the TLS certificate authority (PHONEBRIDGE_FAKEWA_CA).
	CAPEM  []byte
	CAPool *x509.CertPool
	// TLS is the server certificate for web.whatsapp.com and every
	// *.whatsapp.net host, signed by the CA.
	TLS tls.Certificate
}

var (
	pkiOnce sync.Once
	pki     *PKI
	pkiErr  error
)

// SharedPKI returns the process's PKI, made on first use.
func SharedPKI() (*PKI, error) {
	pkiOnce.Do(func() { pki, pkiErr = newPKI() })
	return pki, pkiErr
}

// RootHex is the Noise root's public key in hex.
func (p *PKI) RootHex() string { return hex.EncodeToString(p.Root.Pub[:]) }

func newPKI() (*PKI, error) {
	p := &PKI{Root: keys.NewKeyPair(), Static: keys.NewKeyPair()}
	intermediate := keys.NewKeyPair()
	sign := func(signer *keys.KeyPair, details *waCert.CertChain_NoiseCertificate_Details) (*waCert.CertChain_NoiseCertificate, error) {
		raw, err := proto.Marshal(details)
		if err != nil {
			return nil, err
		}
		sig := ecc.CalculateSignature(ecc.NewDjbECPrivateKey(*signer.Priv), raw)
		return &waCert.CertChain_NoiseCertificate{Details: raw, Signature: sig[:]}, nil
	}
	now := uint64(time.Now().Unix())
	inter, err := sign(p.Root, &waCert.CertChain_NoiseCertificate_Details{
		Serial: proto.Uint32(7), IssuerSerial: proto.Uint32(0), Key: intermediate.Pub[:],
		NotBefore: proto.Uint64(now - 3600), NotAfter: proto.Uint64(now + 10*365*24*3600),
	})
	if err != nil {
		return nil, err
	}
	leaf, err := sign(intermediate, &waCert.CertChain_NoiseCertificate_Details{
		Serial: proto.Uint32(8), IssuerSerial: proto.Uint32(7), Key: p.Static.Pub[:],
		NotBefore: proto.Uint64(now - 3600), NotAfter: proto.Uint64(now + 10*365*24*3600),
	})
	if err != nil {
		return nil, err
	}
	if p.CertChain, err = proto.Marshal(&waCert.CertChain{Leaf: leaf, Intermediate: inter}); err != nil {
		return nil, err
	}
	if err := p.makeTLS(); err != nil {
		return nil, fmt.Errorf("fakewa: TLS certificates: %w", err)
	}
	return p, nil
}

func (p *PKI) makeTLS() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fakewa test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "web.whatsapp.com"},
		DNSNames:     []string{"web.whatsapp.com", "whatsapp.net", "*.whatsapp.net", "*.whatsapp.com", "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	p.CAPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	p.CAPool = x509.NewCertPool()
	p.CAPool.AddCert(caCert)
	p.TLS = tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: leafKey}
	return nil
}
