package irc

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"

	"github.com/phonebridge/phonebridge/connectors/irc/ircconn"
	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
)

// ircClient is one IRC connection as the connector uses it:
// *ircconn.Client in production, a fake in unit tests. Puppet mode will
// hold one per relayed sender.
type ircClient interface {
	// Run connects and keeps reconnecting until ctx ends.
	Run(ctx context.Context) error
	// Send writes m and returns once the server has processed it.
	Send(ctx context.Context, m *ircmsg.Message) error
	// SendBatch writes msgs and confirms them together; it returns how
	// many, from the first, the server processed, and the error of the
	// first it did not.
	SendBatch(ctx context.Context, msgs []*ircmsg.Message) (int, error)
	Nick() string
	// Prefix is nick!user@host as others see it (overestimated until
	// known), for splitting text under 512 bytes.
	Prefix() string
	Join(channel, key string)
	Part(channel, reason string)
	// Channels are those the connection is in now.
	Channels() []string
	// Fold is the server's case-insensitive form of a nick or channel.
	Fold(name string) string
}

var _ ircClient = (*ircconn.Client)(nil)

// clientConfig is what a connection is built from besides the options.
type clientConfig struct {
	nick     string
	channels map[string]string // channel → key ("" for none)
	// puppet: a sender's connection, which logs in to nothing.
	puppet bool
}

// dialClient builds the production connection from the options.
func (c *Connector) dialClient(cfg clientConfig, h ircconn.Handler) (ircClient, error) {
	o := c.opts
	ic := ircconn.Config{
		Addr:             o.Server,
		TLS:              o.TLS,
		TLSInsecure:      o.TLSInsecure,
		TLSFingerprint:   o.TLSFingerprint,
		ServerPassword:   o.Password,
		Nick:             cfg.nick,
		User:             o.User,
		RealName:         o.RealName,
		SASLUser:         o.SASL.User,
		SASLPassword:     o.SASL.Password,
		NickServPassword: o.NickServPassword,
		Channels:         cfg.channels,
		FloodBurst:       o.Flood.Burst,
		FloodRate:        o.Flood.Rate,
		PingInterval:     o.PingInterval,
		PingTimeout:      o.PingTimeout,
		// Which connection a line is about: the bot's, or a puppet's.
		Logger: c.log.With("connection", "bot"),
	}
	if cfg.puppet {
		ic.Logger = c.log.With("connection", "puppet "+cfg.nick)
	}
	if ic.User == "" {
		ic.User = strings.ToLower(o.Nick)
	}
	if cfg.puppet {
		// The bot's credentials are the bot's: a puppet is a guest.
		ic.RealName = "relayed by " + o.Nick + " (phonebridge)"
		ic.NickServPassword, ic.SASLUser, ic.SASLPassword = "", "", ""
		c.tuneClient(&ic)
		return ircconn.New(ic, h)
	}
	switch o.SASL.Mechanism {
	case SASLPlain:
		ic.SASL = ircconn.SASLPlain
		if ic.SASLUser == "" {
			ic.SASLUser = cfg.nick
		}
	case SASLExternal:
		ic.SASL = ircconn.SASLExternal
	}
	if o.ClientCert != "" {
		cert, err := tls.LoadX509KeyPair(o.ClientCert, o.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("load the client certificate (client_cert, client_key): %w", err)
		}
		ic.ClientCert = &cert
	}
	c.tuneClient(&ic)
	return ircconn.New(ic, h)
}

func (c *Connector) tuneClient(ic *ircconn.Config) {
	if c.tune != nil {
		c.tune(ic)
	}
}
