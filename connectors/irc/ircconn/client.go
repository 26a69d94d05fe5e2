package ircconn

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
)

// SASLMechanism is how the connection logs in to the network's services
// during registration.
type SASLMechanism string

// SASL mechanisms.
const (
	SASLNone     SASLMechanism = ""
	SASLPlain    SASLMechanism = "PLAIN"    // SASLUser and SASLPassword
	SASLExternal SASLMechanism = "EXTERNAL" // the TLS client certificate (CertFP)
)

// Config is one connection's settings. Zero durations and counts take the
// defaults named.
type Config struct {
	Addr        string // host:port
	TLS         bool   // TLS with the system roots; ServerName is Addr's host
	TLSInsecure bool   // skip certificate verification (explicit opt-in)
	// TLSFingerprint pins the SHA-256 of the server's leaf certificate
	// (hex, colons allowed, any case). When set it replaces verification.
	TLSFingerprint string
	ClientCert     *tls.Certificate // presented to the server; needed for SASL EXTERNAL
	ServerPassword string           // PASS

	Nick, User, RealName string // User defaults to Nick, RealName to "phonebridge"

	SASL                   SASLMechanism
	SASLUser, SASLPassword string
	// NickServPassword is sent as PRIVMSG NickServ :IDENTIFY after 001
	// when SASL did not log in.
	NickServPassword string

	// Channels maps channel to key ("" for none). They are joined after
	// registration and after every reconnect.
	Channels map[string]string

	PingInterval time.Duration // default 90s: PING when the server was silent this long
	PingTimeout  time.Duration // default 60s: no line this long after our PING means a dead connection

	ReconnectMin, ReconnectMax time.Duration // defaults 2s and 5m; jittered exponential backoff
	KickRejoinDelay            time.Duration // default 10s
	NickRegainInterval         time.Duration // default 60s: how often to try the wanted nick while it is taken

	FloodBurst int     // default 5 lines
	FloodRate  float64 // lines per second, default 0.5; below 0 no pacing

	Logger *slog.Logger
	// Dial opens the TCP connection; nil uses a net.Dialer. Tests inject.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// State is where a connection stands.
type State string

// Connection states.
const (
	StateConnecting   State = "connecting"
	StateRegistered   State = "registered" // got 001; channels are being joined
	StateDisconnected State = "disconnected"
	StateStopped      State = "stopped"
)

// Handler receives what the connection sees. Calls come from Run's
// goroutine, in the order the lines arrived, and must not block long; in
// particular a Handler must not wait for Send, whose confirmation that same
// goroutine delivers.
type Handler interface {
	// Message is called for every line from the server once the client has
	// handled its own part of it, except PING, PONG and, with echo-message,
	// the echoes of our own lines.
	Message(m *ircmsg.Message)
	// State reports a state change, or news within a state, with one line
	// for the operator.
	State(s State, detail string)
}

// Send errors.
var (
	// ErrNotConnected: the connection is not registered; nothing was sent.
	ErrNotConnected = errors.New("ircconn: not connected to the IRC server")
	// ErrConnectionLost: the connection dropped before the server confirmed
	// the line, which may or may not have been processed.
	ErrConnectionLost = errors.New("ircconn: connection lost before the server confirmed the line")
	// ErrInvalidLine: the line cannot be sent as it is; retrying is useless.
	ErrInvalidLine = errors.New("ircconn: invalid line")
	// ErrRejected: the server read the line and answered with an error.
	ErrRejected = errors.New("ircconn: the server refused the line")
)

// Defaults and fixed policy.
const (
	defaultPingInterval = 90 * time.Second
	defaultPingTimeout  = 60 * time.Second
	defaultReconnectMin = 2 * time.Second
	defaultReconnectMax = 5 * time.Minute
	defaultKickRejoin   = 10 * time.Second
	defaultNickRegain   = 60 * time.Second
	defaultFloodBurst   = 5
	defaultFloodRate    = 0.5

	// longBackoff follows a K-line, a failed SASL login or a refused nick:
	// retrying sooner cannot help and looks like abuse to the network.
	longBackoff = 5 * time.Minute
	// stableAfter is how long a registration must last for the backoff to
	// start again from ReconnectMin.
	stableAfter = 60 * time.Second
	// kickWindow: a second kick this soon after the first means we are not
	// wanted, so we stay out until the next connection or Join.
	kickWindow   = 5 * time.Minute
	dialTimeout  = 30 * time.Second
	writeTimeout = 30 * time.Second
	// quitWait bounds each step of a clean close (flushing QUIT, waiting for
	// the server to hang up), within the daemon's shutdown budget.
	quitWait = time.Second
	// unknownHostLen is the host length assumed until we learn ours: the
	// longest DNS label, so that lines split with it always fit.
	unknownHostLen = 63
	maxNickTries   = 50
)

// Client is one IRC connection, kept up by Run. Its methods are safe for
// concurrent use.
type Client struct {
	cfg     Config
	h       Handler
	log     *slog.Logger
	pin     []byte
	tlsConf *tls.Config
	running atomic.Bool
	labels  atomic.Uint64

	mu       sync.Mutex
	state    State
	sess     *session
	nick     string // current nick, or the one being tried
	user     string // our ident as the server shows it, "" until known
	host     string // our host as others see it, "" until known
	casemap  string
	chanType string
	nickLen  int
	want     map[string]*channel // by folded name: the channel set
	joined   map[string]string   // by folded name: the name the server uses
	bucket   bucket
}

// channel is one entry of the channel set.
type channel struct {
	name, key string
	// suspended: we gave up on it (join refused, kicked twice) until the
	// next connection or Join.
	suspended bool
	kickedAt  time.Time
	rejoin    *time.Timer
}

// New checks cfg and returns a Client; Run connects it.
func New(cfg Config, h Handler) (*Client, error) {
	if h == nil {
		return nil, errors.New("ircconn: no Handler")
	}
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil || host == "" || port == "" {
		return nil, fmt.Errorf("ircconn: address %q is not host:port", cfg.Addr)
	}
	if err := checkWord("nick", cfg.Nick); err != nil {
		return nil, err
	}
	if cfg.User == "" {
		cfg.User = cfg.Nick
	}
	if err := checkWord("user", cfg.User); err != nil {
		return nil, err
	}
	if cfg.RealName == "" {
		cfg.RealName = "phonebridge"
	}
	for what, v := range map[string]string{"real name": cfg.RealName, "server password": cfg.ServerPassword,
		"SASL user": cfg.SASLUser, "SASL password": cfg.SASLPassword, "NickServ password": cfg.NickServPassword} {
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, fmt.Errorf("ircconn: %s contains CR, LF or NUL", what)
		}
	}
	cfg.SASL = SASLMechanism(strings.ToUpper(string(cfg.SASL)))
	switch cfg.SASL {
	case SASLNone:
	case SASLPlain:
		if cfg.SASLUser == "" || cfg.SASLPassword == "" {
			return nil, errors.New("ircconn: SASL PLAIN needs a SASL user and password")
		}
	case SASLExternal:
		if cfg.ClientCert == nil {
			return nil, errors.New("ircconn: SASL EXTERNAL needs a client certificate")
		}
	default:
		return nil, fmt.Errorf("ircconn: unknown SASL mechanism %q (want PLAIN or EXTERNAL)", cfg.SASL)
	}
	c := &Client{
		cfg:      cfg,
		h:        h,
		log:      cfg.Logger,
		state:    StateDisconnected,
		nick:     cfg.Nick,
		casemap:  "rfc1459",
		chanType: "#&",
		nickLen:  30,
		want:     map[string]*channel{},
		joined:   map[string]string{},
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if !cfg.TLS && (cfg.TLSInsecure || cfg.TLSFingerprint != "" || cfg.ClientCert != nil) {
		return nil, errors.New("ircconn: TLS options (insecure, fingerprint, client certificate) need TLS on")
	}
	if cfg.TLSFingerprint != "" {
		c.pin, err = parseFingerprint(cfg.TLSFingerprint)
		if err != nil {
			return nil, err
		}
	}
	if cfg.TLS {
		c.tlsConf = c.newTLSConfig(host)
		if cfg.TLSInsecure && c.pin == nil {
			c.log.Warn("IRC: TLS certificate verification is off (insecure flag)", "server", cfg.Addr)
		}
	} else if (cfg.SASL == SASLPlain || cfg.ServerPassword != "" || cfg.NickServPassword != "") && !loopback(host) {
		c.log.Warn("IRC passwords will cross the network unencrypted: TLS is off", "server", cfg.Addr)
	}
	for name, key := range cfg.Channels {
		if err := checkChannel(name, key); err != nil {
			return nil, err
		}
		c.want[c.fold(name)] = &channel{name: name, key: key}
	}
	if err := c.applyDefaults(); err != nil {
		return nil, err
	}
	c.bucket = bucket{burst: float64(c.cfg.FloodBurst), rate: c.cfg.FloodRate, tokens: float64(c.cfg.FloodBurst)}
	return c, nil
}

// loopback reports whether host is this machine, where passwords cross
// no network.
func loopback(host string) bool {
	ip := net.ParseIP(host)
	return strings.EqualFold(host, "localhost") || ip != nil && ip.IsLoopback()
}

func (c *Client) applyDefaults() error {
	cfg := &c.cfg
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{
		{&cfg.PingInterval, defaultPingInterval}, {&cfg.PingTimeout, defaultPingTimeout},
		{&cfg.ReconnectMin, defaultReconnectMin}, {&cfg.ReconnectMax, defaultReconnectMax},
		{&cfg.KickRejoinDelay, defaultKickRejoin}, {&cfg.NickRegainInterval, defaultNickRegain},
	} {
		if *d.v < 0 {
			return errors.New("ircconn: negative duration in the configuration")
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if cfg.ReconnectMax < cfg.ReconnectMin {
		return fmt.Errorf("ircconn: reconnect maximum %s is below the minimum %s", cfg.ReconnectMax, cfg.ReconnectMin)
	}
	if cfg.FloodBurst < 0 {
		return errors.New("ircconn: negative flood burst")
	}
	if cfg.FloodBurst == 0 {
		cfg.FloodBurst = defaultFloodBurst
	}
	if cfg.FloodRate == 0 {
		cfg.FloodRate = defaultFloodRate
	}
	return nil
}

// checkWord accepts what can be a middle parameter and a nick or ident.
func checkWord(what, v string) error {
	if v == "" || strings.ContainsAny(v, " ,*?!@:\r\n\x00") || v[0] == '#' || v[0] == '&' {
		return fmt.Errorf("ircconn: %s %q is empty or holds a space or one of , * ? ! @ : # &", what, v)
	}
	return nil
}

func checkChannel(name, key string) error {
	if name == "" || strings.ContainsAny(name, " ,\x07\r\n\x00") || name[0] == ':' {
		return fmt.Errorf("ircconn: channel %q is empty or holds a space, comma or control character", name)
	}
	if strings.ContainsAny(key, " ,\r\n\x00") || strings.HasPrefix(key, ":") {
		return fmt.Errorf("ircconn: the key of channel %q holds a space, comma or control character", name)
	}
	return nil
}

func parseFingerprint(s string) ([]byte, error) {
	clean := strings.NewReplacer(":", "", " ", "").Replace(strings.TrimSpace(s))
	b, err := hex.DecodeString(clean)
	if err != nil || len(b) != 32 {
		return nil, errors.New("ircconn: TLS fingerprint is not a SHA-256 in hex (64 digits, colons allowed)")
	}
	return b, nil
}

// Nick is our current nick (the one being tried before registration).
func (c *Client) Nick() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nick
}

// Prefix is "nick!user@host" as others see us, as far as we know: from our
// own JOIN, the welcome line, 396 or a WHOIS of ourselves. Until the host is
// known it is 63 'x's and the user is "~"+User, so that text split with
// len(Prefix()) always fits.
func (c *Client) Prefix() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	user, host := c.user, c.host
	if user == "" {
		user = "~" + c.cfg.User
	}
	if host == "" {
		host = strings.Repeat("x", unknownHostLen)
	}
	return c.nick + "!" + user + "@" + host
}

// HasCap reports whether the current connection negotiated an IRCv3
// capability.
func (c *Client) HasCap(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess != nil && c.sess.caps[name]
}

// State is the connection's state now.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Channels lists the channels we are in now, as the server names them,
// sorted.
func (c *Client) Channels() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.joined))
	for _, name := range c.joined {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// Fold maps name for case-insensitive comparison under the server's
// CASEMAPPING (rfc1459 until the server says otherwise).
func (c *Client) Fold(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fold(name)
}

// IsChannel reports whether name is a channel by the server's CHANTYPES.
func (c *Client) IsChannel(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return name != "" && strings.IndexByte(c.chanType, name[0]) >= 0
}

// Join adds channel to the channel set: it is joined now if we are
// registered, and after every reconnect. It also lifts a give-up after
// kicks or a refused join. A name or key IRC cannot carry is logged and
// ignored.
func (c *Client) Join(name, key string) {
	if err := checkChannel(name, key); err != nil {
		c.log.Error("IRC: not joining", "err", err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.fold(name)
	if ch := c.want[f]; ch != nil && ch.rejoin != nil {
		ch.rejoin.Stop()
	}
	ch := &channel{name: name, key: key}
	c.want[f] = ch
	if s := c.sess; s != nil && s.registered {
		if _, in := c.joined[f]; !in {
			s.joinChannels([]*channel{ch})
		}
	}
}

// Part removes channel from the channel set and leaves it if we are in it.
func (c *Client) Part(name, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.fold(name)
	if ch := c.want[f]; ch != nil && ch.rejoin != nil {
		ch.rejoin.Stop()
	}
	delete(c.want, f)
	if s := c.sess; s != nil && s.registered {
		if name, in := c.joined[f]; in {
			m := &ircmsg.Message{Command: "PART", Params: []string{name}}
			if reason != "" {
				m.Params = append(m.Params, reason)
			}
			s.writePaced(m)
		}
	}
}

// Run connects, registers and keeps the connection up, reconnecting with
// backoff, until ctx ends; then it sends QUIT if connected, closes and
// returns nil.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("ircconn: Run called while already running")
	}
	defer c.running.Store(false)
	var bo backoff
	for {
		c.emit(c.setState(StateConnecting, "connecting to "+c.cfg.Addr))
		end := c.connect(ctx)
		if ctx.Err() != nil {
			c.emit(c.setState(StateStopped, "stopped"))
			return nil
		}
		if end.registeredFor >= stableAfter {
			bo.reset()
		}
		d := max(bo.next(c.cfg.ReconnectMin, c.cfg.ReconnectMax), end.minDelay)
		c.log.Warn("IRC connection ended", "server", c.cfg.Addr, "reason", end.reason, "retry_in", d)
		c.emit(c.setState(StateDisconnected, end.reason+"; retrying in "+fmtDuration(d)))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			c.emit(c.setState(StateStopped, "stopped"))
			return nil
		case <-t.C:
		}
	}
}

// report is a state change for the Handler, made under c.mu and delivered
// after it is released.
type report struct {
	state  State
	detail string
}

// setState records a state and returns the report to emit. Handlers of
// lines, which run with c.mu held, use session.report instead.
func (c *Client) setState(s State, detail string) []report {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state = s
	return []report{{s, detail}}
}

func (c *Client) emit(rs []report) {
	for _, r := range rs {
		c.h.State(r.state, r.detail)
	}
}

// fmtDuration writes d for an operator: "8s", "5m", "1m30s", "250ms".
func fmtDuration(d time.Duration) string {
	if d >= time.Second {
		d = d.Round(time.Second)
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
