// Package faultproxy is a TCP proxy for tests that puts faults between a
// client and a server: connections reset, a route gone silent, a slow link.
// Each control applies at once to the open connections and to those made
// later, until Heal.
package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

type mode int

const (
	modeNormal mode = iota
	modeCut
	modeBlackHole
	modeSlow
)

// Proxy forwards each connection to its listener to the target.
type Proxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup

	mu    sync.Mutex
	mode  mode
	rate  int                   // bytes a second, in modeSlow
	wake  chan struct{}         // closed and replaced on every change
	conns map[*pair]struct{}    // open connections
	quit  chan struct{}         // closed by close
	dials map[net.Conn]struct{} // accepted, still dialing the target
}

// pair is one proxied connection: the client's side and the target's.
type pair struct {
	client, server net.Conn
	once           sync.Once
	done           chan struct{}
}

// Start listens on a free loopback port and forwards to target
// (host:port). It is closed, and every goroutine it started has ended, by
// the time t's cleanup has run.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{
		target: target,
		ln:     ln,
		wake:   make(chan struct{}),
		conns:  map[*pair]struct{}{},
		quit:   make(chan struct{}),
		dials:  map[net.Conn]struct{}{},
	}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's host:port, to give the client instead of the
// target's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Conns is the number of connections open through the proxy.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Cut resets every open connection on both sides (RST, not FIN: a crash
// or a middlebox dropping state, not a clean close), and resets each new
// one as soon as it is accepted, until Heal.
func (p *Proxy) Cut() {
	p.set(modeCut, 0)
	p.mu.Lock()
	open := make([]*pair, 0, len(p.conns))
	for c := range p.conns {
		open = append(open, c)
	}
	p.mu.Unlock()
	for _, c := range open {
		c.reset()
	}
}

// BlackHole stops forwarding in both directions without closing anything:
// both peers see silence, as over a route that died. What they send
// meanwhile waits in the proxy and the kernel's buffers and goes on after
// Heal, as TCP retransmits once a route returns. New connections are
// accepted and dialed but just as silent.
func (p *Proxy) BlackHole() { p.set(modeBlackHole, 0) }

// Slow forwards at most bytesPerSecond in each direction of each
// connection.
func (p *Proxy) Slow(bytesPerSecond int) {
	if bytesPerSecond <= 0 {
		panic("faultproxy: Slow needs a positive rate")
	}
	p.set(modeSlow, bytesPerSecond)
}

// Heal returns to forwarding at full speed.
func (p *Proxy) Heal() { p.set(modeNormal, 0) }

func (p *Proxy) set(m mode, rate int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode, p.rate = m, rate
	close(p.wake)
	p.wake = make(chan struct{})
}

func (p *Proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	select {
	case <-p.quit:
	default:
		close(p.quit)
	}
	open := make([]*pair, 0, len(p.conns))
	for c := range p.conns {
		open = append(open, c)
	}
	for c := range p.dials {
		c.Close()
	}
	p.mu.Unlock()
	for _, c := range open {
		c.close()
	}
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	p.mu.Lock()
	m := p.mode
	select {
	case <-p.quit:
		m = modeCut
	default:
		p.dials[client] = struct{}{}
	}
	p.mu.Unlock()
	if m == modeCut {
		resetConn(client)
		return
	}
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	p.mu.Lock()
	delete(p.dials, client)
	c := &pair{client: client, server: server, done: make(chan struct{})}
	// Cut or close may have come while dialing: they did not see this
	// connection, so it is dropped here.
	dropped := err != nil || p.mode == modeCut
	select {
	case <-p.quit:
		dropped = true
	default:
	}
	if !dropped {
		p.conns[c] = struct{}{}
	}
	p.mu.Unlock()
	if dropped {
		resetConn(client)
		if server != nil {
			resetConn(server)
		}
		return
	}
	var both sync.WaitGroup
	both.Add(2)
	go func() { defer both.Done(); p.pump(c, client, server) }()
	go func() { defer both.Done(); p.pump(c, server, client) }()
	both.Wait()
	c.close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// pump copies src to dst under the proxy's mode until either side fails.
// A clean EOF is passed on as a half close, as a real path would.
func (p *Proxy) pump(c *pair, src, dst net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.forward(c, dst, buf[:n]) {
			c.close()
			return
		}
		// A dead route carries no FIN or RST either.
		if err != nil {
			if _, _, _, ok := p.gate(c); !ok {
				return
			}
		}
		if errors.Is(err, io.EOF) {
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			return
		}
		if err != nil {
			c.close()
			return
		}
	}
}

// forward writes b to dst when and as fast as the mode allows; false if
// the connection ended meanwhile.
func (p *Proxy) forward(c *pair, dst net.Conn, b []byte) bool {
	for len(b) > 0 {
		m, rate, wake, ok := p.gate(c)
		if !ok {
			return false
		}
		n := len(b)
		if m == modeSlow {
			// Chunks of a twentieth of a second keep the pace even.
			n = min(n, max(1, rate/20))
		}
		if _, err := dst.Write(b[:n]); err != nil {
			return false
		}
		b = b[n:]
		if m == modeSlow {
			pause := time.NewTimer(time.Duration(n) * time.Second / time.Duration(rate))
			select {
			case <-pause.C:
			case <-wake:
				pause.Stop()
			case <-c.done:
				pause.Stop()
				return false
			}
		}
	}
	return true
}

// gate waits while nothing may pass, and returns the mode that lets
// bytes through; false if the connection ended meanwhile.
func (p *Proxy) gate(c *pair) (m mode, rate int, wake chan struct{}, ok bool) {
	for {
		p.mu.Lock()
		m, rate, wake = p.mode, p.rate, p.wake
		p.mu.Unlock()
		if m != modeBlackHole && m != modeCut {
			return m, rate, wake, true
		}
		select {
		case <-wake:
		case <-c.done:
			return m, rate, wake, false
		}
	}
}

func (c *pair) close() {
	c.once.Do(func() {
		close(c.done)
		c.client.Close()
		c.server.Close()
	})
}

func (c *pair) reset() {
	c.once.Do(func() {
		close(c.done)
		resetConn(c.client)
		resetConn(c.server)
	})
}

// resetConn closes with an RST: linger 0 discards what is unsent.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
