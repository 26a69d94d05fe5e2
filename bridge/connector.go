package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/phonebridge/phonebridge/config"
)

// Connector is one platform account: it turns platform traffic into Events
// for the Sink and Events into platform traffic in Send.
type Connector interface {
	// Start connects and returns; inbound events then go to sink until
	// Stop. ctx bounds the start-up only: the connector's life ends at
	// Stop. A connector that cannot reach its server yet keeps retrying on
	// its own and reports its state through sink.SetState rather than
	// failing; Start fails only for what retrying cannot fix (a listen
	// address in use, bad credentials).
	Start(ctx context.Context, sink Sink) error
	// Send performs one outgoing event and returns the native id it
	// created ("" where the platform has none). Errors are transient
	// (retried with backoff) unless wrapped with Permanent.
	Send(ctx context.Context, out *Outgoing) (nativeID string, err error)
	// Stop disconnects, waiting for in-flight work, within ctx.
	Stop(ctx context.Context) error
	// Capabilities says what Send can do; the core falls back for the rest.
	Capabilities() Capabilities
}

// Outgoing is an event bound for one destination chat.
type Outgoing struct {
	Event
	// Key identifies this delivery, stable across retries and restarts.
	// Destinations that accept an idempotency key (Matrix txnId, the API's
	// event id) use it so a redelivery never shows twice.
	Key string
	// MaybeSent says an earlier attempt at this delivery may have reached
	// the destination: it failed after the request went out, or the
	// bridge stopped uncleanly before recording it. A destination whose
	// idempotency key may not hold (a homeserver that forgot it) checks
	// for the earlier copy before sending.
	MaybeSent bool
	// After is the key of the delivery made to the same chat just before
	// this one, "" when unknown. A destination that commits what it is
	// sent after Send returns (the api connector) checks that After's
	// commit did not fail before it takes this one, so the chat keeps its
	// order while the core sends the failed one again.
	After string
}

// Capabilities is what a connector's Send supports. Where a capability is
// missing, the core falls back: edits become corrected copies, reactions
// and deletes become notices or are dropped, per the relay config.
type Capabilities struct {
	Edits     bool
	Deletes   bool
	Reactions bool
	Replies   bool
	Media     bool
	// Locations: Send shows Event.Location as a place on a map; others
	// get it as text with a map link.
	Locations bool
	// Polls: Send asks Event.Poll as a poll; others get its question and
	// numbered options as text.
	Polls bool
	// HTML: Send renders Event.HTML; otherwise only Text is meaningful.
	HTML   bool
	Typing bool
	Read   bool
	// History: Send shows an Event.History message as the past, at its
	// Time, without notifying (Matrix). Others never get them: a backlog
	// of old messages into IRC would flood the channel.
	History bool
	// MaxTextLength in characters (runes); 0 is unlimited. Longer text is
	// split by the core into several messages.
	MaxTextLength int
}

// Sink is the core as a connector sees it. One Sink is bound to one
// connector; events need not set Chat.Connector.
type Sink interface {
	// Submit hands an inbound event to the core and returns at once. done
	// is called exactly once: with nil after the event is committed to the
	// store (acknowledge it to the platform only then), or with the reason
	// it was refused. Events submitted from one goroutine are committed in
	// submission order. Ephemeral kinds (typing, read) are not stored; done
	// is called once they are handed to the router.
	Submit(ev *Event, done func(error))
	// Resume says chat (every chat when "") can take deliveries again:
	// a client subscribed, a server came back. Deliveries waiting out a
	// backoff for it are retried now.
	Resume(chat string)
	// SetState reports the connector's state for logs and status.
	SetState(state State, detail string)
	// Notice posts text for the operator to the configured notices chat
	// (config `notices:`), durably like any event; without one it is only
	// logged. For what needs acting on: "link 'me' was logged out".
	Notice(text string)
	// ChatsChanged says the connector's chat list changed (linked, chats
	// loaded, a group renamed), so routes naming chats by name are
	// resolved again.
	ChatsChanged()
	// DescribeChat and DescribeSender ask an outgoing event's origin
	// connector (Outgoing.Origin) what it shows of the chat or of a
	// sender in it, for destinations that show them (a portal's topic and
	// picture, a ghost's avatar). They fail with ErrNotDescribed (wrapped)
	// where the origin cannot say.
	DescribeChat(ctx context.Context, origin ChatRef) (ChatDescription, error)
	DescribeSender(ctx context.Context, origin ChatRef, sender string) (SenderDescription, error)
	// DescriptionChanged says what the connector, a Describer, says of
	// chat or person id changed (a new picture or topic), so destinations
	// that keep descriptions (DescriptionWatcher) ask again.
	DescriptionChanged(id string)
}

// Accept submits ev and waits until it is committed or refused.
func Accept(ctx context.Context, sink Sink, ev *Event) error {
	done := make(chan error, 1)
	sink.Submit(ev, func(err error) { done <- err })
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// State is a connector's connection state.
type State string

// Connector states.
const (
	StateStarting     State = "starting"
	StateConnecting   State = "connecting"
	StateConnected    State = "connected"
	StateDisconnected State = "disconnected"
	StateStopped      State = "stopped"
	StateFailed       State = "failed"
)

// MediaOpener is implemented by connectors whose inbound events carry
// media: the core calls it, when a destination wants the bytes, with a
// Media taken from one of this connector's own events.
type MediaOpener interface {
	OpenMedia(ctx context.Context, m Media) (io.ReadCloser, error)
}

// Env is what the core gives a connector when building it.
type Env struct {
	// Name is the connector's name in the config (connectors.NAME).
	Name     string
	Logger   *slog.Logger
	StateDir string
	// Store is the bridge's database; connectors keep their own tables
	// in it (see Store.Migrate) and write through Store.Write.
	Store *Store
	// ConfigDir is the config file's directory ("" when the config did not
	// come from a file): relative paths in options are relative to it.
	ConfigDir string
	// Media publishes attachments at a URL for platforms that can only
	// show a link; nil when no media server is configured.
	Media MediaPublisher
}

// MediaPublisher serves files at public, unguessable, expiring URLs: the
// media server (config `media:`), for destinations that can carry a link
// but not the file (IRC).
type MediaPublisher interface {
	// Publish copies m's bytes (through m.Open) and returns the URL that
	// serves them until they expire.
	Publish(ctx context.Context, m Media) (url string, err error)
}

// NewEnv is the Env of the connector called name in cfg.
func NewEnv(cfg *config.Config, name string, store *Store, log *slog.Logger) Env {
	env := Env{Name: name, Logger: log.With("connector", name), StateDir: cfg.StateDir, Store: store}
	if cfg.Path != "" {
		env.ConfigDir = filepath.Dir(cfg.Path)
	}
	return env
}

// Path resolves a path from the connector's options: a relative one is
// relative to the config file's directory, as the config's own paths are.
func (e Env) Path(p string) string {
	if p == "" || filepath.IsAbs(p) || e.ConfigDir == "" {
		return p
	}
	return filepath.Join(e.ConfigDir, p)
}

// permanentError marks a delivery error that retrying cannot fix.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying (too large, forbidden, no such
// chat): the core records it, logs it and moves on to the next event.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// Permanentf is Permanent(fmt.Errorf(...)).
func Permanentf(format string, args ...any) error { return Permanent(fmt.Errorf(format, args...)) }

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool { return errors.As(err, new(permanentError)) }

// retryAfterError carries a destination's own back-off request.
type retryAfterError struct {
	after time.Duration
	err   error
}

func (e retryAfterError) Error() string { return e.err.Error() }
func (e retryAfterError) Unwrap() error { return e.err }

// RetryAfter marks a transient err with the wait the destination asked for
// (Matrix M_LIMIT_EXCEEDED's retry_after_ms, HTTP Retry-After).
func RetryAfter(after time.Duration, err error) error {
	return retryAfterError{after: after, err: err}
}

// retryAfterOf returns the wait requested through RetryAfter, if any.
func retryAfterOf(err error) (time.Duration, bool) {
	var ra retryAfterError
	if errors.As(err, &ra) {
		return ra.after, true
	}
	return 0, false
}

// ConnectorType is one kind of connector (api, whatsapp, matrix, irc),
// registered from its own package's init.
type ConnectorType struct {
	// Name is the value of `type:` in a connector's config section.
	Name string
	// NewOptions returns a pointer to the type's options struct with its
	// defaults set; the config package decodes the section into it
	// strictly. The struct may implement config.Validator.
	NewOptions func() any
	// New builds a connector from options NewOptions made and the config
	// validated.
	New func(env Env, options any) (Connector, error)
}

var (
	registryMu sync.RWMutex
	registry   = map[string]ConnectorType{}
)

// Register makes a connector type known to the config and the core. It
// panics on a duplicate: two packages claiming one type is a build bug.
func Register(t ConnectorType) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[t.Name]; dup {
		panic("bridge: connector type " + t.Name + " registered twice")
	}
	registry[t.Name] = t
	config.RegisterConnectorType(t.Name, t.NewOptions)
}

// LookupType returns the registered connector type called name.
func LookupType(name string) (ConnectorType, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	t, ok := registry[name]
	return t, ok
}

// KeyPrefix starts every Outgoing.Key. Platforms whose clients choose
// their own event ids (the API) refuse inbound ids with this prefix, so
// a client can never forge or collide with an id the bridge assigned.
const KeyPrefix = "pb."

// ErrNoRoute is returned through Submit's done for an event from a chat
// that no route takes events from. It is wrapped with the chat's name.
var ErrNoRoute = errors.New("no route takes events from this chat")
