// Package api is phonebridge's HTTP and websocket connector: its
// "platform" is a local server where programs (bots, other bridges, tests)
// send events into chats and receive the events the bridge delivers to
// them. The protocol is documented in docs/api.md.
package api

import (
	"fmt"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
)

func init() {
	bridge.Register(bridge.ConnectorType{
		Name:       "api",
		NewOptions: func() any { return NewOptions() },
		New: func(env bridge.Env, options any) (bridge.Connector, error) {
			o, ok := options.(*Options)
			if !ok {
				return nil, fmt.Errorf("api connector %q: options are %T, not *api.Options", env.Name, options)
			}
			return New(env, o)
		},
	})
}

// Options is a connectors.NAME section of type api.
type Options struct {
	// Listen is host:port; loopback by default so nothing outside the
	// machine reaches the API unless the operator says so.
	Listen string `yaml:"listen"`
	// Token is the bearer token clients present. Empty: one is generated
	// and kept in STATE_DIR/NAME.token.
	Token string `yaml:"token" secret:"true"`
	// MaxMessageBytes bounds one JSON body or websocket frame.
	MaxMessageBytes int64 `yaml:"max_message_bytes"`
	// MaxMediaBytes bounds one stored attachment.
	MaxMediaBytes int64 `yaml:"max_media_bytes"`
	// History is how many delivered events are kept per chat for
	// clients that resume.
	History int `yaml:"history"`
	// ClientBuffer is how many frames may wait for one websocket client
	// before it is dropped as too slow.
	ClientBuffer int `yaml:"client_buffer"`
	// MaxTextLength (runes, 0 unlimited) is reported in Capabilities so
	// the core splits longer text.
	MaxTextLength int `yaml:"max_text_length"`
}

// Defaults.
const (
	DefaultListen          = "127.0.0.1:8780"
	DefaultMaxMessageBytes = 1 << 20
	DefaultMaxMediaBytes   = 64 << 20
	DefaultHistory         = 10000
	DefaultClientBuffer    = 1024
)

// minTokenLength keeps configured tokens out of guessing range.
const minTokenLength = 16

// NewOptions returns Options with every default set.
func NewOptions() *Options {
	return &Options{
		Listen:          DefaultListen,
		MaxMessageBytes: DefaultMaxMessageBytes,
		MaxMediaBytes:   DefaultMaxMediaBytes,
		History:         DefaultHistory,
		ClientBuffer:    DefaultClientBuffer,
	}
}

// Validate implements config.Validator.
func (o *Options) Validate(c *config.Checker) {
	c.ListenAddr("listen", o.Listen)
	if o.Token != "" && len(o.Token) < minTokenLength {
		c.Errorf("token", "is %d characters; use at least %d, or leave it empty to have one generated", len(o.Token), minTokenLength)
	}
	if o.MaxMessageBytes < 1024 {
		c.Errorf("max_message_bytes", "must be at least 1024 (got %d)", o.MaxMessageBytes)
	}
	c.Positive("max_media_bytes", o.MaxMediaBytes)
	c.Positive("history", int64(o.History))
	if o.ClientBuffer < 2 {
		c.Errorf("client_buffer", "must be at least 2 (got %d)", o.ClientBuffer)
	}
	if o.MaxTextLength < 0 {
		c.Errorf("max_text_length", "must be 0 (unlimited) or more (got %d)", o.MaxTextLength)
	}
}
