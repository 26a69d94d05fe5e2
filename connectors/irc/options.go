// Package irc is phonebridge's IRC connector. In relay-bot mode one
// connection (nick `nick`) joins the channels the routes name and speaks
// for everyone, each line prefixed with its sender through sender_format.
// The protocol client is ircconn; lines are parsed and written by ircmsg.
package irc

import (
	"encoding/hex"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
)

func init() {
	bridge.Register(bridge.ConnectorType{
		Name:       "irc",
		NewOptions: func() any { return NewOptions() },
		New: func(env bridge.Env, options any) (bridge.Connector, error) {
			o, ok := options.(*Options)
			if !ok {
				return nil, fmt.Errorf("irc connector %q: options are %T, not *irc.Options", env.Name, options)
			}
			return New(env, o)
		},
	})
}

// Options is a connectors.NAME section of type irc.
type Options struct {
	// Server is host:port.
	Server string `yaml:"server"`
	// TLS is on by default; tls_insecure skips certificate checks, and
	// tls_fingerprint pins the server certificate's SHA-256 instead.
	TLS            bool   `yaml:"tls"`
	TLSInsecure    bool   `yaml:"tls_insecure"`
	TLSFingerprint string `yaml:"tls_fingerprint"`
	// ClientCert and ClientKey are PEM files for CertFP (SASL EXTERNAL).
	ClientCert string `yaml:"client_cert"`
	ClientKey  string `yaml:"client_key"`
	// Password is the server password (PASS), rarely needed.
	Password string `yaml:"password" secret:"true"`
	Nick     string `yaml:"nick"`
	// User is the ident; default the nick.
	User     string `yaml:"user"`
	RealName string `yaml:"real_name"`
	SASL     SASL   `yaml:"sasl"`
	// NickServPassword identifies with NickServ after registration, for
	// networks without SASL.
	NickServPassword string `yaml:"nickserv_password" secret:"true"`
	// ChannelKeys are the keys (+k) of routed channels that have one.
	ChannelKeys map[string]string `yaml:"channel_keys"`
	Flood       Flood             `yaml:"flood"`
	// PingInterval is how long the server may be silent before the bot
	// PINGs it; PingTimeout how long it then waits for any line before
	// it calls the connection dead and reconnects. A dead route sends no
	// RST, so only this notices it.
	PingInterval time.Duration `yaml:"ping_interval"`
	PingTimeout  time.Duration `yaml:"ping_timeout"`

	// SenderFormat is each relayed line: {name} is the sender, {text} a
	// line of the message.
	SenderFormat string `yaml:"sender_format"`
	// ZeroWidthNames puts U+200D into relayed names so that IRC clients
	// do not highlight the IRC user who has the same nick.
	ZeroWidthNames bool `yaml:"zero_width_names"`
	// NickColors colours each relayed name, the same colour every time.
	NickColors bool `yaml:"nick_colors"`
	// MaxLines bounds the IRC lines one message becomes; the rest is
	// replaced by a marker. 0 is unlimited.
	MaxLines int `yaml:"max_lines"`
	// ShowDeletes relays deletes as "Ann deleted a message" notices
	// (relay.deletes decides between notice and drop): IRC keeps a record
	// of each relayed message for it.
	ShowDeletes bool `yaml:"show_deletes"`
	// ShowJoins relays joins, parts, quits and nick changes as notices.
	ShowJoins bool `yaml:"show_joins"`

	// Mode is "relay" (the bot speaks for everyone) or "puppet" (each
	// relayed sender gets a connection of their own, under a nick made
	// from their name; the bot still relays what IRC says).
	Mode    string  `yaml:"mode"`
	Puppets Puppets `yaml:"puppets"`
}

// Puppets is the puppets: subsection, for mode puppet.
type Puppets struct {
	// Suffix ends every puppet's nick: "Ann[wa]".
	Suffix string `yaml:"suffix"`
	// Max bounds the puppet connections open at once (networks limit
	// connections per address); beyond it the bot relays for the others.
	Max int `yaml:"max"`
	// IdleTimeout disconnects a puppet that has not spoken for this long.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
}

// SASL is the sasl: subsection.
type SASL struct {
	// Mechanism is "" (none), "plain" or "external" (the client
	// certificate).
	Mechanism string `yaml:"mechanism"`
	// User is the account name; default the nick.
	User     string `yaml:"user"`
	Password string `yaml:"password" secret:"true"`
}

// Flood is the flood: subsection: a token bucket of burst lines filling at
// rate lines a second. A negative rate turns pacing off.
type Flood struct {
	Burst int     `yaml:"burst"`
	Rate  float64 `yaml:"rate"`
}

// Modes.
const (
	ModeRelay  = "relay"
	ModePuppet = "puppet"
)

// SASL mechanisms.
const (
	SASLPlain    = "plain"
	SASLExternal = "external"
)

// Defaults.
const (
	DefaultSenderFormat = "<{name}> {text}"
	DefaultRealName     = "phonebridge"
	DefaultMaxLines     = 5
	DefaultFloodBurst   = 5
	DefaultFloodRate    = 1.0
	DefaultPuppetSuffix = "[wa]"
	DefaultPuppetMax    = 10
	DefaultPuppetIdle   = 30 * time.Minute
	DefaultPingInterval = 90 * time.Second
	DefaultPingTimeout  = 60 * time.Second
)

// NewOptions returns Options with every default set.
func NewOptions() *Options {
	return &Options{
		TLS:            true,
		RealName:       DefaultRealName,
		Flood:          Flood{Burst: DefaultFloodBurst, Rate: DefaultFloodRate},
		PingInterval:   DefaultPingInterval,
		PingTimeout:    DefaultPingTimeout,
		SenderFormat:   DefaultSenderFormat,
		ZeroWidthNames: true,
		MaxLines:       DefaultMaxLines,
		Mode:           ModeRelay,
		Puppets:        Puppets{Suffix: DefaultPuppetSuffix, Max: DefaultPuppetMax, IdleTimeout: DefaultPuppetIdle},
	}
}

// Validate implements config.Validator.
func (o *Options) Validate(c *config.Checker) {
	host := ""
	if c.Required("server", o.Server) {
		h, port, err := net.SplitHostPort(o.Server)
		if n, perr := strconv.Atoi(port); err != nil || h == "" || perr != nil || n < 1 || n > 65535 {
			c.Errorf("server", "%q is not host:port (e.g. irc.libera.chat:6697)", o.Server)
		} else {
			host = h
		}
	}
	if c.Required("nick", o.Nick) && !validNick(o.Nick) {
		c.Errorf("nick", "%q is not a valid IRC nick (letters, digits and []\\`_^{|}-, not starting with a digit or -)", o.Nick)
	}
	if o.User != "" && strings.ContainsAny(o.User, " @!:\r\n\x00") {
		c.Errorf("user", "%q may not hold spaces, @, ! or :", o.User)
	}
	if strings.ContainsAny(o.RealName, "\r\n\x00") {
		c.Errorf("real_name", "may not hold line breaks")
	}
	if o.TLSFingerprint != "" {
		if _, err := parseFingerprint(o.TLSFingerprint); err != nil {
			c.Errorf("tls_fingerprint", "%v", err)
		}
	}
	if !o.TLS {
		for key, set := range map[string]bool{"tls_insecure": o.TLSInsecure, "tls_fingerprint": o.TLSFingerprint != "", "client_cert": o.ClientCert != ""} {
			if set {
				c.Errorf(key, "needs tls: true")
			}
		}
	}
	if (o.ClientCert == "") != (o.ClientKey == "") {
		c.Errorf("client_key", "client_cert and client_key go together: give both or neither")
	}
	sc := c.At("sasl")
	switch o.SASL.Mechanism {
	case "":
		if o.SASL.Password != "" || o.SASL.User != "" {
			sc.Errorf("mechanism", "is empty, so sasl.user and sasl.password are unused: set it to plain")
		}
	case SASLPlain:
		sc.Required("password", o.SASL.Password)
	case SASLExternal:
		if o.ClientCert == "" {
			sc.Errorf("mechanism", "external authenticates with the client certificate: set client_cert and client_key")
		}
	default:
		sc.OneOf("mechanism", o.SASL.Mechanism, SASLPlain, SASLExternal)
	}
	// Secure by default: credentials never cross the network in clear.
	if !o.TLS && host != "" && !isLoopback(host) {
		for key, secret := range map[string]string{"password": o.Password, "sasl.password": o.SASL.Password, "nickserv_password": o.NickServPassword} {
			if secret != "" {
				c.Errorf(key, "would be sent to %s unencrypted: set tls: true (the server's TLS port is usually 6697)", host)
			}
		}
	}
	keys := make([]string, 0, len(o.ChannelKeys))
	for ch := range o.ChannelKeys {
		keys = append(keys, ch)
	}
	sort.Strings(keys)
	for _, ch := range keys {
		if !isChannel(ch) {
			c.At("channel_keys").Errorf(ch, "%q is not a channel name (#channel)", ch)
		} else if k := o.ChannelKeys[ch]; k == "" || strings.ContainsAny(k, " ,\r\n\x00") {
			c.At("channel_keys").Errorf(ch, "a channel key is one word without commas")
		}
	}
	fc := c.At("flood")
	fc.Positive("burst", int64(o.Flood.Burst))
	if o.Flood.Rate == 0 {
		fc.Errorf("rate", "must be more than 0 lines a second, or negative to turn flood control off")
	}
	for key, d := range map[string]time.Duration{"ping_interval": o.PingInterval, "ping_timeout": o.PingTimeout} {
		if d < time.Second {
			c.Errorf(key, "must be at least 1s (got %s)", d)
		}
	}
	if err := checkSenderFormat(o.SenderFormat); err != nil {
		c.Errorf("sender_format", "%v", err)
	}
	if o.MaxLines < 0 {
		c.Errorf("max_lines", "must be 0 (unlimited) or more (got %d)", o.MaxLines)
	}
	if c.OneOf("mode", o.Mode, ModeRelay, ModePuppet) && o.Mode == ModePuppet {
		pc := c.At("puppets")
		if len(o.Puppets.Suffix) > 8 || (o.Puppets.Suffix != "" && !validNick("a"+o.Puppets.Suffix)) {
			pc.Errorf("suffix", "%q must be at most 8 nick characters (letters, digits and []\\`_^{|}-)", o.Puppets.Suffix)
		}
		pc.Positive("max", int64(o.Puppets.Max))
		if o.Puppets.IdleTimeout < time.Second {
			pc.Errorf("idle_timeout", "must be at least 1s (got %s)", o.Puppets.IdleTimeout)
		}
	}
}

// parseFingerprint reads a SHA-256 fingerprint as hex, with or without
// colons.
func parseFingerprint(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.ReplaceAll(s, ":", ""))
	if err != nil || len(b) != 32 {
		return nil, fmt.Errorf("%q is not a SHA-256 fingerprint (64 hex digits, colons allowed; `openssl x509 -noout -fingerprint -sha256` prints it)", s)
	}
	return b, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validNick reports whether s is a nick by RFC 2812's grammar, which
// every server accepts.
func validNick(s string) bool {
	if s == "" || s[0] == '-' || ('0' <= s[0] && s[0] <= '9') {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("[]\\`_^{|}-", c) >= 0) {
			return false
		}
	}
	return true
}

// isChannel reports whether s is a channel name: a channel prefix, then
// no space, comma or BEL.
func isChannel(s string) bool {
	return len(s) > 1 && strings.IndexByte("#&+!", s[0]) >= 0 && !strings.ContainsAny(s, " ,\x07\r\n\x00")
}
