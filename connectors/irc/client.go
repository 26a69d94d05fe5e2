package irc

import (
	"context"
	"errors"

	"github.com/phonebridge/phonebridge/connectors/irc/ircmsg"
)

// ircClient is one IRC connection as the connector uses it: ircconn.Client
// in production, a fake in unit tests. Puppet mode will hold one per
// relayed sender.
type ircClient interface {
	// Run connects and keeps reconnecting until ctx ends.
	Run(ctx context.Context) error
	// Send writes m and returns once the server has read it.
	Send(ctx context.Context, m *ircmsg.Message) error
	Nick() string
	// Prefix is nick!user@host as others see it (overestimated until
	// known), for splitting text under 512 bytes.
	Prefix() string
	Join(channel, key string)
	Part(channel, reason string)
	State() connState
}

// connState is a connection's state, as the client reports it.
type connState string

// clientHandler receives a connection's lines and state changes, on one
// goroutine, in arrival order.
type clientHandler interface {
	Message(m *ircmsg.Message)
	State(s connState, detail string)
}

// Connection states.
const (
	stateConnecting   connState = "connecting"
	stateRegistered   connState = "registered"
	stateDisconnected connState = "disconnected"
	stateStopped      connState = "stopped"
)

// Send errors: not registered, dropped before the server confirmed, a
// line the client refuses to write, and one the server refused (404).
var (
	errNotConnected   = errors.New("not connected to the IRC server")
	errConnectionLost = errors.New("the connection to the IRC server was lost before it confirmed the line")
	errInvalidLine    = errors.New("invalid IRC line")
	errRejected       = errors.New("the IRC server refused the line")
)

// clientConfig is what a connection is built from.
type clientConfig struct {
	nick     string
	channels map[string]string // channel → key ("" for none)
}

// dialClient builds the production connection.
func (c *Connector) dialClient(cfg clientConfig, h clientHandler) (ircClient, error) {
	return nil, errors.New("the IRC protocol client is not built yet")
}
