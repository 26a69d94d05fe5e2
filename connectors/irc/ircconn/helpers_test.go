package ircconn

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"io"
	"log/slog"
	"math/big"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
)

// waitFor bounds every wait in these tests; a healthy run takes far less.
const waitFor = 15 * time.Second

type stateEvent struct {
	state  State
	detail string
}

// recorder is a Handler that keeps what it is given and wakes waiters on
// each call.
type recorder struct {
	t       testing.TB
	mu      sync.Mutex
	changed chan struct{}
	msgs    []*ircmsg.Message
	states  []stateEvent
	cursor  int // states before it were matched by waitState
	log     strings.Builder
}

// Write keeps the client's log, for tests that check what it holds.
func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.log.Write(p)
}

// snapshot copies the messages and the log.
func (r *recorder) snapshot() ([]*ircmsg.Message, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs), r.log.String()
}

func (r *recorder) messages() []*ircmsg.Message {
	msgs, _ := r.snapshot()
	return msgs
}

func (r *recorder) logs() string {
	_, log := r.snapshot()
	return log
}

func newRecorder(t testing.TB) *recorder {
	return &recorder{t: t, changed: make(chan struct{})}
}

func (r *recorder) Message(m *ircmsg.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, m)
	r.notifyLocked()
}

func (r *recorder) State(s State, detail string) {
	if strings.ContainsAny(detail, "\r\n") || detail == "" {
		r.t.Errorf("state detail is not one line: %q", detail)
	}
	r.t.Logf("state %s: %s", s, detail)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, stateEvent{s, detail})
	r.notifyLocked()
}

func (r *recorder) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// poke wakes waiters, for conditions on something else than the recorder.
func (r *recorder) poke() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notifyLocked()
}

// wait blocks until cond, called with r.mu held after every Handler call,
// holds.
func (r *recorder) wait(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !r.tryWait(waitFor, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// tryWait is wait that reports a timeout instead of failing.
func (r *recorder) tryWait(d time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok := cond()
		ch := r.changed
		r.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return false
		}
	}
}

// waitState waits for a state report after the last one matched, with
// detail containing substr, and returns its detail.
func (r *recorder) waitState(t testing.TB, s State, substr string) string {
	t.Helper()
	var got string
	r.wait(t, "state "+string(s)+" "+substr, func() bool {
		for i := r.cursor; i < len(r.states); i++ {
			if e := r.states[i]; e.state == s && strings.Contains(e.detail, substr) {
				r.cursor = i + 1
				got = e.detail
				return true
			}
		}
		return false
	})
	return got
}

func (r *recorder) countStates(substr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.states {
		if strings.Contains(e.detail, substr) {
			n++
		}
	}
	return n
}

// waitMessage waits for a line matching pred and returns it.
func (r *recorder) waitMessage(t testing.TB, what string, pred func(m *ircmsg.Message) bool) *ircmsg.Message {
	t.Helper()
	var got *ircmsg.Message
	r.wait(t, what, func() bool {
		for _, m := range r.msgs {
			if pred(m) {
				got = m
				return true
			}
		}
		return false
	})
	return got
}

func isPrivmsg(from, target, text string) func(m *ircmsg.Message) bool {
	return func(m *ircmsg.Message) bool {
		return m.Command == "PRIVMSG" && m.Nick() == from && m.Param(0) == target && m.Param(1) == text
	}
}

// running is a Client whose Run goroutine the test owns.
type running struct {
	*Client
	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan error
	err      error
}

// stop cancels Run and waits for it; Run must return nil promptly.
func (r *running) stop(t testing.TB) {
	t.Helper()
	r.stopOnce.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(waitFor):
			t.Errorf("Run did not return after its context ended")
		}
		if r.err != nil {
			t.Errorf("Run returned %v, want nil", r.err)
		}
	})
}

func startClient(t testing.TB, cfg Config, h Handler) *running {
	t.Helper()
	c, err := New(cfg, h)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Client: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fakeServer is a scripted IRC server: the test reads what the client
// writes and answers line by line.
type fakeServer struct {
	ln    net.Listener
	conns chan *fakeConn
	mu    sync.Mutex
	all   []*fakeConn
}

func newFakeServer(t testing.TB, tlsConf *tls.Config) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
	}
	fs := &fakeServer{ln: ln, conns: make(chan *fakeConn, 16)}
	accepted, closed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fc := newFakeConn(c)
			fs.mu.Lock()
			fs.all = append(fs.all, fc)
			fs.mu.Unlock()
			// The client speaks first. A connection that hangs up without
			// a line is a stray: tests in parallel (other packages too)
			// dial ports they were given, which this listener may reuse
			// once they are free; a test took one for its client's once.
			go func() {
				<-fc.spoke
				if fc.silent() {
					return
				}
				select {
				case fs.conns <- fc:
				case <-closed:
				}
			}()
		}
	}()
	t.Cleanup(func() {
		close(closed)
		ln.Close()
		<-accepted
		fs.mu.Lock()
		defer fs.mu.Unlock()
		for _, fc := range fs.all {
			fc.close()
		}
	})
	return fs
}

func (fs *fakeServer) addr() string { return fs.ln.Addr().String() }

func (fs *fakeServer) accept(t testing.TB) *fakeConn {
	t.Helper()
	select {
	case fc := <-fs.conns:
		return fc
	case <-time.After(waitFor):
		t.Fatal("timed out waiting for the client to connect")
		return nil
	}
}

// noConnection asserts the client does not connect again within d.
func (fs *fakeServer) noConnection(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case <-fs.conns:
		t.Fatalf("the client connected again within %v", d)
	case <-time.After(d):
	}
}

// fakeConn is one client connection to the fake server.
type fakeConn struct {
	c        net.Conn
	lines    chan string
	spoke    chan struct{} // closed at the first line, or at the end without one
	autoPong atomic.Bool
	mu       sync.Mutex
	log      []string // every line the client wrote
	arrivals []time.Time
}

func newFakeConn(c net.Conn) *fakeConn {
	fc := &fakeConn{c: c, lines: make(chan string, 1024), spoke: make(chan struct{})}
	go fc.read()
	return fc
}

// read logs the client's lines; like a server it answers PING when
// autoPong is on and hangs up after QUIT.
func (fc *fakeConn) read() {
	defer close(fc.lines)
	var spoke sync.Once
	defer spoke.Do(func() { close(fc.spoke) })
	sc := bufio.NewScanner(fc.c)
	for sc.Scan() {
		line := sc.Text()
		fc.mu.Lock()
		fc.log = append(fc.log, line)
		fc.arrivals = append(fc.arrivals, time.Now())
		fc.mu.Unlock()
		spoke.Do(func() { close(fc.spoke) })
		m, err := ircmsg.Parse(line)
		if err == nil && m.Command == "PING" && fc.autoPong.Load() {
			fc.send("PONG srv :" + m.Trailing())
			continue
		}
		fc.lines <- line
		if err == nil && m.Command == "QUIT" {
			fc.send("ERROR :Closing Link: bye")
			fc.c.Close()
			return
		}
	}
}

func (fc *fakeConn) send(lines ...string) {
	for _, l := range lines {
		_, _ = fc.c.Write([]byte(l + "\r\n"))
	}
}

func (fc *fakeConn) close() { fc.c.Close() }

// silent says whether the connection ended without a line; only once
// spoke is closed.
func (fc *fakeConn) silent() bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return len(fc.log) == 0
}

// next returns the client's next line, skipping none.
func (fc *fakeConn) next(t testing.TB) *ircmsg.Message {
	t.Helper()
	select {
	case line, ok := <-fc.lines:
		if !ok {
			t.Fatal("the client hung up")
		}
		m, err := ircmsg.Parse(line)
		if err != nil {
			t.Fatalf("the client wrote %q: %v", line, err)
		}
		return m
	case <-time.After(waitFor):
		t.Fatal("timed out waiting for a line from the client")
		return nil
	}
}

// expect skips lines until one with command cmd (and, when given, first
// parameter param0) and returns it.
func (fc *fakeConn) expect(t testing.TB, cmd string, param0 ...string) *ircmsg.Message {
	t.Helper()
	for {
		m := fc.next(t)
		if m.Command == cmd && (len(param0) == 0 || m.Param(0) == param0[0]) {
			return m
		}
	}
}

// play runs a dialogue: "< CMD [param]" waits for the client's next line
// with that command (and first parameter), skipping others; "> line" sends
// a line.
func (fc *fakeConn) play(t testing.TB, steps ...string) {
	t.Helper()
	for _, step := range steps {
		switch dir, rest, _ := strings.Cut(step, " "); dir {
		case "<":
			f := strings.Fields(rest)
			fc.expect(t, f[0], f[1:]...)
		case ">":
			fc.send(rest)
		default:
			t.Fatalf("bad dialogue step %q", step)
		}
	}
}

// quiet asserts the client writes no line with command cmd within d.
func (fc *fakeConn) quiet(t testing.TB, d time.Duration, cmd string) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case line, ok := <-fc.lines:
			if !ok {
				return
			}
			if m, err := ircmsg.Parse(line); err == nil && m.Command == cmd {
				t.Fatalf("unexpected line from the client: %q", line)
			}
		case <-deadline:
			return
		}
	}
}

// written is every line the client wrote so far.
func (fc *fakeConn) written() []string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return append([]string(nil), fc.log...)
}

// register plays a server's part of registration: CAP LS answered with
// caps (every REQ acknowledged), or ignored when caps is empty; then the
// welcome for nick.
func (fc *fakeConn) register(t testing.TB, nick string, caps ...string) {
	t.Helper()
	fc.expect(t, "CAP", "LS")
	if len(caps) > 0 {
		fc.send(":srv CAP * LS :" + strings.Join(caps, " "))
		req := fc.expect(t, "CAP", "REQ")
		fc.send(":srv CAP * ACK :" + req.Trailing())
		fc.expect(t, "CAP", "END")
	}
	fc.welcome(nick)
}

func (fc *fakeConn) welcome(nick string) {
	fc.send(":srv 001 "+nick+" :Welcome to the test network "+nick,
		":srv 005 "+nick+" NICKLEN=30 CHANTYPES=# CASEMAPPING=rfc1459 :are supported by this server")
}

// fakeConfig is a client of a fake server: no pacing, quick reconnects.
func fakeConfig(t testing.TB, addr string) Config {
	return Config{
		Addr:         addr,
		Nick:         "pb",
		FloodRate:    -1,
		ReconnectMin: 10 * time.Millisecond,
		ReconnectMax: 50 * time.Millisecond,
		Logger:       testLogger(t),
	}
}

// fake is a running client of a new fake server, and its connection.
type fake struct {
	fs *fakeServer
	r  *recorder
	c  *running
	fc *fakeConn
}

// dialFake starts a client of a new fake server (TLS with tlsConf, when
// set), its fakeConfig changed by adjust, and accepts its connection. The
// client logs at debug level to the test and to the recorder.
func dialFake(t testing.TB, tlsConf *tls.Config, adjust func(*Config)) *fake {
	t.Helper()
	f := &fake{fs: newFakeServer(t, tlsConf), r: newRecorder(t)}
	cfg := fakeConfig(t, f.fs.addr())
	cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), f.r), &slog.HandlerOptions{Level: slog.LevelDebug}))
	if adjust != nil {
		adjust(&cfg)
	}
	f.c = startClient(t, cfg, f.r)
	f.fc = f.fs.accept(t)
	return f
}

// registeredFake is dialFake on plain TCP with registration done, the
// server offering caps.
func registeredFake(t testing.TB, adjust func(*Config), caps ...string) *fake {
	t.Helper()
	f := dialFake(t, nil, adjust)
	f.fc.register(t, "pb", caps...)
	f.r.waitState(t, StateRegistered, "registered as pb")
	return f
}

// selfSigned makes a certificate for 127.0.0.1, good for an hour.
func selfSigned(t testing.TB, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// fingerprint is cert's SHA-256 as operators write it: upper-case hex with
// colons.
func fingerprint(cert tls.Certificate) string {
	sum := sha256.Sum256(cert.Certificate[0])
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var parts []string
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

func privmsg(target, text string) *ircmsg.Message {
	return &ircmsg.Message{Command: "PRIVMSG", Params: []string{target, text}}
}
