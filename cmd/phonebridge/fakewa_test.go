package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/internal/daemontest"
)

// The fakewa build tag points the WhatsApp connector at a fake server
// named by PHONEBRIDGE_FAKEWA_ADDR, _CA and _ROOT
// (connectors/whatsapp/fakewa_hook.go). These tests run the tagged binary
// and the normal one with those variables set: only the tagged one may
// reach the fake server, and a normal build must ignore them.

// fakewaBinary is cmd/phonebridge built with -tags fakewa, once per test
// process (with -race under PHONEBRIDGE_TEST_RACE=1, as daemontest.Binary).
func fakewaBinary(t testing.TB) string {
	t.Helper()
	return daemontest.BinaryWithTags(t, "fakewa")
}

// fakeWA is a TLS listener standing in for WhatsApp: it records every TCP
// connection, the name each TLS client asked for, and each HTTP request,
// and refuses the requests (503).
type fakeWA struct {
	addr   string
	caPath string

	mu       sync.Mutex
	conns    int
	snis     []string
	requests []string // "METHOD host path upgrade"
}

func newFakeWA(t *testing.T, dir string) *fakeWA {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "phonebridge test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "web.whatsapp.com"},
		DNSNames:     []string{"web.whatsapp.com", "*.whatsapp.net", "*.whatsapp.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeWA{caPath: filepath.Join(dir, "ca.pem")}
	if err := os.WriteFile(f.caPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	tlsLn := tls.NewListener(countingListener{ln, f}, &tls.Config{
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			f.mu.Lock()
			f.snis = append(f.snis, hello.ServerName)
			f.mu.Unlock()
			return &cert, nil
		},
	})
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			f.mu.Lock()
			f.requests = append(f.requests, fmt.Sprintf("%s %s %s %s", r.Method, r.Host, r.URL.Path, strings.ToLower(r.Header.Get("Upgrade"))))
			f.mu.Unlock()
			http.Error(w, "the test's fake WhatsApp refuses", http.StatusServiceUnavailable)
		}),
		// Refused handshakes are the point of some tests, not news.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go srv.Serve(tlsLn)
	t.Cleanup(func() { srv.Close() })
	return f
}

type countingListener struct {
	net.Listener
	f *fakeWA
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.f.mu.Lock()
		l.f.conns++
		l.f.mu.Unlock()
	}
	return c, err
}

// seen is what the fake server has seen so far.
func (f *fakeWA) seen() (conns int, snis, requests []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns, append([]string(nil), f.snis...), append([]string(nil), f.requests...)
}

// connectProxy is an HTTPS proxy that refuses every CONNECT (502) after
// noting its target: the real WhatsApp as a normal build reaches for it,
// without the test touching the network.
type connectProxy struct {
	addr    string
	mu      sync.Mutex
	targets []string
}

func newConnectProxy(t *testing.T) *connectProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{addr: ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.targets = append(p.targets, r.Method+" "+r.Host)
		p.mu.Unlock()
		http.Error(w, "the test's proxy refuses", http.StatusBadGateway)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return p
}

func (p *connectProxy) seen() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.targets...)
}

// fakewaConfig writes a config with one whatsapp connector, wa, in a
// directory short enough for the control socket.
func fakewaConfig(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pbw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "phonebridge.yaml")
	if err := os.WriteFile(path, []byte("state_dir: ./state\nconnectors:\n  wa:\n    type: whatsapp\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// testRoot is a Noise root key for the fake server (any 32 bytes do: the
// listener refuses before any Noise handshake).
var testRoot = strings.Repeat("5a", 32)

// fakewaEnv is the environment that points a fakewa build at the server
// at addr, trusting the CA at caPath, with every proxy setting of the
// test's own environment replaced by proxy.
func fakewaEnv(addr, caPath, root string, proxy *connectProxy) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(name) {
		case "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY":
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"PHONEBRIDGE_FAKEWA_ADDR="+addr,
		"PHONEBRIDGE_FAKEWA_CA="+caPath,
		"PHONEBRIDGE_FAKEWA_ROOT="+root,
		"HTTPS_PROXY=http://"+proxy.addr,
		"https_proxy=http://"+proxy.addr,
	)
}

// cannotReach is what `phonebridge link` prints once a connection attempt
// failed.
const cannotReach = "Cannot reach WhatsApp's servers"

// linkUntilRefused runs `phonebridge link wa` with env until it says it
// cannot reach WhatsApp, then interrupts it; it returns what the command
// wrote and how long until the refusal.
func linkUntilRefused(t *testing.T, bin, cfg string, env []string) (stdout, stderr string, took time.Duration) {
	t.Helper()
	cmd := exec.Command(bin, "link", "wa", "-c", cfg)
	cmd.Env = env
	var out, errOut daemontest.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(60 * time.Second)
	for !strings.Contains(out.String(), cannotReach) {
		select {
		case err := <-exited:
			t.Fatalf("phonebridge link exited (%v) before trying WhatsApp:\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
		case <-deadline:
			cmd.Process.Kill()
			<-exited
			t.Fatalf("phonebridge link did not report a failed connection within 60s:\nstdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	took = time.Since(start)
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Errorf("phonebridge link did not stop within 20s of SIGINT")
	}
	return out.String(), errOut.String(), took
}

// TestFakeWATagReachesTheFakeServerOnly: a binary built with -tags fakewa
// dials the server the variables name, by TLS for web.whatsapp.com, and
// asks it for WhatsApp's websocket; a normal build with the same
// variables reaches for the real WhatsApp (here a proxy that refuses)
// and never touches the fake server.
func TestFakeWATagReachesTheFakeServerOnly(t *testing.T) {
	tagged, normal := fakewaBinary(t), daemontest.Binary(t)

	f, proxy := newFakeWA(t, t.TempDir()), newConnectProxy(t)
	stdout, stderr, took := linkUntilRefused(t, tagged, fakewaConfig(t), fakewaEnv(f.addr, f.caPath, testRoot, proxy))
	conns, snis, requests := f.seen()
	if conns == 0 || len(snis) == 0 || snis[0] != "web.whatsapp.com" {
		t.Errorf("tagged: the fake server saw %d connections with TLS names %q, want web.whatsapp.com\nstdout:\n%s\nstderr:\n%s", conns, snis, stdout, stderr)
	}
	if len(requests) == 0 || requests[0] != "GET web.whatsapp.com /ws/chat websocket" {
		t.Errorf("tagged: the fake server got requests %q, want the websocket upgrade GET web.whatsapp.com /ws/chat", requests)
	}
	if targets := proxy.seen(); len(targets) > 0 {
		t.Errorf("tagged: the proxy got %q: the fake server's connections must not go through a proxy", targets)
	}
	if warning := "built for tests (-tags fakewa): it talks to the fake WhatsApp server at " + f.addr; strings.Count(stderr, warning) != 1 {
		t.Errorf("tagged: stderr does not say once that it talks to the fake server (%q):\n%s", warning, stderr)
	}

	f, proxy = newFakeWA(t, t.TempDir()), newConnectProxy(t)
	start := time.Now()
	stdout, stderr, _ = linkUntilRefused(t, normal, fakewaConfig(t), fakewaEnv(f.addr, f.caPath, testRoot, proxy))
	// At least as long as the tagged binary took to reach the fake server.
	time.Sleep(took - time.Since(start))
	if targets := proxy.seen(); len(targets) == 0 || targets[0] != "CONNECT web.whatsapp.com:443" {
		t.Errorf("normal: the proxy got %q, want CONNECT web.whatsapp.com:443 (the real WhatsApp)\nstdout:\n%s\nstderr:\n%s", targets, stdout, stderr)
	}
	if conns, snis, requests := f.seen(); conns != 0 {
		t.Errorf("normal: the fake server saw %d connections (TLS names %q, requests %q), want none", conns, snis, requests)
	}
	if strings.Contains(stderr, "fakewa") {
		t.Errorf("normal: stderr mentions fakewa:\n%s", stderr)
	}
}

// TestFakeWATagRefusesBadVariables: a tagged binary given variables it
// cannot use fails to start, saying which one and what to do, rather than
// talk to the real WhatsApp.
func TestFakeWATagRefusesBadVariables(t *testing.T) {
	tagged := fakewaBinary(t)
	f, proxy := newFakeWA(t, t.TempDir()), newConnectProxy(t)
	for _, tc := range []struct {
		name, root, ca string
		want           string
	}{
		{"root not hex", "not-hex", f.caPath, "PHONEBRIDGE_FAKEWA_ROOT is not 64 hex digits"},
		{"root too short", "5a5a", f.caPath, "PHONEBRIDGE_FAKEWA_ROOT is not 64 hex digits"},
		{"CA unreadable", testRoot, filepath.Join(t.TempDir(), "missing.pem"), "PHONEBRIDGE_FAKEWA_CA: cannot read the CA certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(tagged, "run", "-c", fakewaConfig(t))
			cmd.Env = fakewaEnv(f.addr, tc.ca, tc.root, proxy)
			var out, errOut daemontest.SyncBuffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			var err error
			deadline := time.After(60 * time.Second)
		wait:
			for {
				select {
				case err = <-exited:
					break wait
				case <-deadline:
				case <-time.After(20 * time.Millisecond):
					if !strings.Contains(errOut.String(), daemontest.ReadyLine) {
						continue
					}
				}
				cmd.Process.Kill()
				<-exited
				t.Fatalf("the daemon started:\n%s", errOut.String())
			}
			if code := cmd.ProcessState.ExitCode(); err == nil || code != 1 {
				t.Errorf("the daemon exited with %v (code %d), want 1", err, code)
			}
			var line string
			for _, l := range strings.Split(errOut.String(), "\n") {
				if strings.HasPrefix(l, "phonebridge: ") {
					line = l
				}
			}
			if !strings.Contains(line, tc.want) || !strings.Contains(line, "unset PHONEBRIDGE_FAKEWA_ADDR") {
				t.Errorf("the error line is %q, want it to say %q and how to talk to WhatsApp instead; stderr:\n%s", line, tc.want, errOut.String())
			}
		})
	}
	if conns, _, _ := f.seen(); conns != 0 || len(proxy.seen()) != 0 {
		t.Errorf("a daemon that refused to start made %d connections to the fake server and %q to the proxy", conns, proxy.seen())
	}
}
