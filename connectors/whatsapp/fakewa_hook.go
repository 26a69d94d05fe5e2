//go:build fakewa

package whatsapp

// Built with -tags fakewa, phonebridge talks to a fake WhatsApp server
// for tests instead of WhatsApp, as three environment variables say
// (other fake servers rely on them; keep them as they are):
//
//	PHONEBRIDGE_FAKEWA_ADDR  host:port that every WhatsApp host dials
//	PHONEBRIDGE_FAKEWA_CA    PEM file of the CA to trust, the only one,
//	                         for those TLS connections
//	PHONEBRIDGE_FAKEWA_ROOT  hex of the 32-byte Noise certificate root
//	                         public key (whatsmeow.WACertPubKey)
//
// With none set, the binary talks to WhatsApp as a normal build does.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"go.mau.fi/whatsmeow"
)

const (
	envFakeAddr = "PHONEBRIDGE_FAKEWA_ADDR"
	envFakeCA   = "PHONEBRIDGE_FAKEWA_CA"
	envFakeRoot = "PHONEBRIDGE_FAKEWA_ROOT"
)

func init() { clientHook = fakeServer }

var fake struct {
	once   sync.Once
	addr   string
	http   *http.Client
	err    error
	warned sync.Once
}

// fakeServer reads the variables once per process; every connector then
// gets the same answer, and the warning is logged once.
func fakeServer(log *slog.Logger) (*http.Client, error) {
	fake.once.Do(func() { fake.addr, fake.http, fake.err = setupFakeServer() })
	if fake.err != nil || fake.http == nil {
		return nil, fake.err
	}
	fake.warned.Do(func() {
		log.Warn("this phonebridge is built for tests (-tags fakewa): it talks to the fake WhatsApp server at " + fake.addr + ", not to WhatsApp")
	})
	return fake.http, nil
}

func setupFakeServer() (addr string, hc *http.Client, err error) {
	addr, caPath, rootHex := os.Getenv(envFakeAddr), os.Getenv(envFakeCA), os.Getenv(envFakeRoot)
	if addr == "" && caPath == "" && rootHex == "" {
		return "", nil, nil
	}
	fail := func(format string, args ...any) (string, *http.Client, error) {
		return "", nil, fmt.Errorf(format+"; fix it, or unset %s, %s and %s to talk to WhatsApp", append(args, envFakeAddr, envFakeCA, envFakeRoot)...)
	}
	if addr == "" || caPath == "" || rootHex == "" {
		return fail("%s, %s and %s must be set together (got %s=%q, %s=%q, %s=%q)",
			envFakeAddr, envFakeCA, envFakeRoot, envFakeAddr, addr, envFakeCA, caPath, envFakeRoot, rootHex)
	}
	if host, port, err := net.SplitHostPort(addr); err != nil || host == "" || port == "" {
		return fail("%s=%q is not host:port", envFakeAddr, addr)
	}
	pem, err := os.ReadFile(caPath)
	if err != nil {
		return fail("%s: cannot read the CA certificate: %v", envFakeCA, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fail("%s=%s holds no PEM certificate", envFakeCA, caPath)
	}
	root, err := hex.DecodeString(rootHex)
	if err != nil || len(root) != len(whatsmeow.WACertPubKey) {
		return fail("%s is not %d hex digits, a %d-byte Noise root public key (got %d characters)", envFakeRoot, 2*len(whatsmeow.WACertPubKey), len(whatsmeow.WACertPubKey), len(rootHex))
	}
	// Set once, before any client of this process exists.
	whatsmeow.WACertPubKey = [32]byte(root)

	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	hc = &http.Client{Transport: &http.Transport{
		// Every host (web.whatsapp.com, mmg.whatsapp.net, ...) is the fake
		// server; no proxy stands between. TLS still names the host asked
		// for, so the server's certificate must cover it.
		Proxy: nil,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		},
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		// The websocket upgrade needs HTTP/1.1.
		ForceAttemptHTTP2:     false,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   4,
	}}
	return addr, hc, nil
}
