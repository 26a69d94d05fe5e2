package ircconn

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
)

// session is one connection, from dial to close. Fields below mu are
// guarded by Client.mu; the rest belong to the goroutine named.
type session struct {
	c    *Client
	conn net.Conn

	stop       chan struct{} // closed at teardown: the writer flushes and ends, the reader drains
	wake       chan struct{} // the writer has lines to write (capacity 1)
	writeErr   chan error    // the writer failed (capacity 1)
	readerDone chan struct{}
	writerDone chan struct{}
	readErr    error // set by the reader before it closes its lines channel

	// guarded by Client.mu
	queue      []string // lines for the writer, CRLF included
	closing    bool     // teardown began: no more lines but the QUIT
	registered bool
	regAt      time.Time
	end        *sessionEnd // set by a handler that decided to hang up
	reports    []report
	reg        registration
	caps       map[string]bool
	confirm    confirmer
	nickFailed bool // the server refused the wanted nick after registration
	kline      string
}

// sessionEnd says why a connection ended and how to go on.
type sessionEnd struct {
	reason        string        // one line for the operator
	quit          string        // QUIT message to send first, "" for none
	minDelay      time.Duration // wait at least this long before reconnecting
	registeredFor time.Duration
}

func (c *Client) newTLSConfig(host string) *tls.Config {
	tc := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if c.cfg.ClientCert != nil {
		tc.Certificates = []tls.Certificate{*c.cfg.ClientCert}
	}
	switch {
	case c.pin != nil:
		// The pin replaces chain and name checks: self-signed
		// certificates are what pins are for.
		tc.InsecureSkipVerify = true
		pin := c.pin
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server sent no certificate")
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if !bytes.Equal(sum[:], pin) {
				return fmt.Errorf("server certificate SHA-256 %x does not match the pinned fingerprint", sum)
			}
			return nil
		}
	case c.cfg.TLSInsecure:
		tc.InsecureSkipVerify = true
	}
	return tc
}

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	dial := c.cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(ctx, "tcp", c.cfg.Addr)
	if err != nil {
		return nil, err
	}
	if c.tlsConf == nil {
		return conn, nil
	}
	tc := tls.Client(conn, c.tlsConf)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}

// describeErr shortens a network error to what an operator needs:
// "connection refused" rather than "dial tcp 10.0.0.1:6697: connect:
// connection refused".
func describeErr(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil && !strings.HasPrefix(err.Error(), "TLS") {
		err = op.Err
	}
	var sys *os.SyscallError
	if errors.As(err, &sys) {
		err = sys.Err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return "timed out"
	}
	return err.Error()
}

// connect runs one connection until it ends.
func (c *Client) connect(ctx context.Context) sessionEnd {
	conn, err := c.dial(ctx)
	if err != nil {
		return sessionEnd{reason: fmt.Sprintf("cannot connect to %s: %s", c.cfg.Addr, describeErr(err))}
	}
	c.log.Debug("IRC connected", "server", c.cfg.Addr)
	s := &session{
		c:          c,
		conn:       conn,
		stop:       make(chan struct{}),
		wake:       make(chan struct{}, 1),
		writeErr:   make(chan error, 1),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
		caps:       map[string]bool{},
	}
	lines := make(chan string)
	go s.reader(lines)
	go s.writer()
	c.mu.Lock()
	c.sess = s
	c.nick = c.cfg.Nick
	c.user, c.host = "", ""
	c.bucket.refill(time.Now())
	for _, ch := range c.want {
		ch.suspended, ch.kickedAt = false, time.Time{}
	}
	s.register()
	c.mu.Unlock()
	end := s.loop(ctx, lines)
	s.teardown(&end)
	return end
}

// loop handles the connection's lines and timers until it ends. It runs
// on Run's goroutine, which is the one the Handler is called from.
func (s *session) loop(ctx context.Context, lines <-chan string) sessionEnd {
	c := s.c
	// One timer does the keep-alive: reset by every line, it fires after
	// PingInterval of silence (we PING) and then after PingTimeout more
	// (the connection is dead).
	idle := time.NewTimer(c.cfg.PingInterval)
	defer idle.Stop()
	awaiting := false
	// The regain timer runs only while someone else holds our nick.
	regain := time.NewTimer(c.cfg.NickRegainInterval)
	regain.Stop()
	defer regain.Stop()
	var regainC <-chan time.Time
	var writeErr error
	for {
		select {
		case <-ctx.Done():
			return sessionEnd{reason: "stopped", quit: "phonebridge shutting down"}
		case err := <-s.writeErr:
			// Lines the server sent before the break may still be
			// unread: read them (briefly) rather than drop them.
			writeErr = err
			_ = s.conn.SetReadDeadline(time.Now().Add(quitWait))
		case raw, ok := <-lines:
			if !ok {
				switch {
				case writeErr != nil:
					return sessionEnd{reason: "connection lost: " + describeErr(writeErr)}
				case s.readErr == io.EOF:
					return sessionEnd{reason: "the server closed the connection"}
				}
				return sessionEnd{reason: "connection lost: " + describeErr(s.readErr)}
			}
			idle.Reset(c.cfg.PingInterval)
			awaiting = false
			if end := s.process(raw); end != nil {
				return *end
			}
		case <-idle.C:
			if awaiting {
				return sessionEnd{reason: fmt.Sprintf("no reply from the server for %s after PING", fmtDuration(c.cfg.PingTimeout))}
			}
			c.mu.Lock()
			s.confirm.keepalive(s)
			c.mu.Unlock()
			awaiting = true
			idle.Reset(c.cfg.PingTimeout)
		case <-regainC:
			regainC = nil
			c.mu.Lock()
			if s.needRegain() {
				s.writePaced(&ircmsg.Message{Command: "NICK", Params: []string{c.cfg.Nick}})
			}
			c.mu.Unlock()
		}
		c.mu.Lock()
		need := s.needRegain()
		c.mu.Unlock()
		switch {
		case need && regainC == nil:
			regain.Reset(c.cfg.NickRegainInterval)
			regainC = regain.C
		case !need && regainC != nil:
			regain.Stop()
			regainC = nil
		}
	}
}

// process parses and handles one line, then tells the Handler. It returns
// the session's end when handling decided to hang up.
func (s *session) process(raw string) *sessionEnd {
	c := s.c
	m, err := ircmsg.Parse(raw)
	if err != nil {
		// slog quotes the line, whatever bytes it holds.
		c.log.Debug("IRC: skipping a line from the server", "err", err, "line", raw[:min(len(raw), 200)])
		return nil
	}
	if c.log.Enabled(context.Background(), slog.LevelDebug) {
		// Redacted too: with echo-message our IDENTIFY comes back.
		c.log.Debug("IRC <", "line", redact(m))
	}
	c.mu.Lock()
	pass := s.handle(m)
	reports := s.reports
	s.reports = nil
	end := s.end
	c.mu.Unlock()
	c.emit(reports)
	if pass {
		c.h.Message(m)
	}
	return end
}

// report records a state change for the Handler. Called with c.mu held.
func (s *session) report(st State, detail string) {
	s.c.state = st
	s.reports = append(s.reports, report{st, detail})
}

// hangUp ends the session after the current line. Called with c.mu held.
func (s *session) hangUp(e sessionEnd) {
	if s.end == nil {
		s.end = &e
	}
}

// write queues one line for the writer. Called with c.mu held, so the
// queue's order is the order the server reads, which confirmations rely
// on. It reports whether the line was queued.
func (s *session) write(m *ircmsg.Message) bool {
	if s.closing {
		return false
	}
	line, err := m.Marshal()
	if err != nil {
		s.c.log.Error("IRC: not sending an invalid line", "command", m.Command, "err", err)
		return false
	}
	if s.c.log.Enabled(context.Background(), slog.LevelDebug) {
		s.c.log.Debug("IRC >", "line", redact(m))
	}
	s.queue = append(s.queue, line+"\r\n")
	s.confirm.seq++
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}

// writePaced writes a line of our own, taking a flood token without
// waiting for it, so that the Sends after it wait instead.
func (s *session) writePaced(m *ircmsg.Message) {
	s.c.bucket.reserve(time.Now())
	s.write(m)
}

// redact returns m for the debug log without the secrets it may carry.
func redact(m *ircmsg.Message) string {
	switch m.Command {
	case "PASS", "OPER":
		return m.Command + " <redacted>"
	case "AUTHENTICATE":
		if p := m.Param(0); p == "PLAIN" || p == "EXTERNAL" || p == "+" || p == "*" {
			return m.String()
		}
		return "AUTHENTICATE <redacted>"
	case "PRIVMSG", "NOTICE":
		text := strings.ToUpper(m.Trailing())
		if strings.HasPrefix(strings.ToLower(m.Param(0)), "nickserv") || strings.HasPrefix(text, "IDENTIFY") {
			return m.Command + " " + m.Param(0) + " <redacted>"
		}
	}
	return m.String()
}

// reader reads lines and hands them to the loop; after stop it drains
// until the server hangs up. Lines too long for any server are skipped.
func (s *session) reader(lines chan<- string) {
	defer close(s.readerDone)
	br := bufio.NewReaderSize(s.conn, ircmsg.MaxTagsLen+ircmsg.MaxLineLen)
	skipping := false
	for {
		b, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if !skipping {
				s.c.log.Debug("IRC: skipping an overlong line from the server")
			}
			skipping = true
			continue
		}
		if err != nil {
			s.readErr = err
			close(lines)
			return
		}
		if skipping {
			skipping = false
			continue
		}
		select {
		case lines <- string(b):
		case <-s.stop:
		}
	}
}

// writer writes what is queued, in batches, until stop; then it flushes
// what is left (the QUIT) and ends.
func (s *session) writer() {
	defer close(s.writerDone)
	c := s.c
	for {
		stopping := false
		select {
		case <-s.wake:
		case <-s.stop:
			stopping = true
		}
		c.mu.Lock()
		batch := s.queue
		s.queue = nil
		d := writeTimeout
		if s.closing {
			d = quitWait
		}
		// Under the lock, so that teardown's shorter deadline is never
		// overwritten by a longer one.
		_ = s.conn.SetWriteDeadline(time.Now().Add(d))
		c.mu.Unlock()
		if len(batch) > 0 {
			if _, err := io.WriteString(s.conn, strings.Join(batch, "")); err != nil {
				select {
				case s.writeErr <- err:
				default:
				}
				return
			}
		}
		if stopping {
			return
		}
	}
}

// teardown ends the connection: QUIT if asked, pending Sends failed, the
// goroutines stopped and waited for.
func (s *session) teardown(end *sessionEnd) {
	c := s.c
	readerEnded := false
	select {
	case <-s.readerDone:
		readerEnded = true
	default:
	}
	quit := end.quit != "" && !readerEnded
	c.mu.Lock()
	if quit {
		s.write(&ircmsg.Message{Command: "QUIT", Params: []string{end.quit}})
	}
	s.closing = true
	_ = s.conn.SetWriteDeadline(time.Now().Add(quitWait))
	s.confirm.failAll()
	for _, ch := range c.want {
		if ch.rejoin != nil {
			ch.rejoin.Stop()
			ch.rejoin = nil
		}
	}
	if s.registered {
		end.registeredFor = time.Since(s.regAt)
	}
	c.sess = nil
	c.joined = map[string]string{}
	c.state = StateDisconnected
	c.mu.Unlock()
	close(s.stop)
	if quit {
		// Closing with the server's reply unread would reset the
		// connection, which can discard the QUIT: let the server hang up.
		<-s.writerDone
		t := time.NewTimer(quitWait)
		select {
		case <-s.readerDone:
		case <-t.C:
		}
		t.Stop()
	}
	s.conn.Close()
	<-s.writerDone
	<-s.readerDone
	c.log.Debug("IRC disconnected", "server", c.cfg.Addr, "reason", end.reason)
}
