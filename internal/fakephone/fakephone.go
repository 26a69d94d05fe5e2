// Package fakephone is a connector type for tests that links like WhatsApp
// without a server. Only tests import it: importing it registers the type
// "fakephone".
package fakephone

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
)

// Each fakephone connector stands for a Phone a test scripts, found by the
// `phone:` key of its config section (Phone.Key). Every connector built for one phone
// (the daemon's, a local API's) shares its state, as two processes share
// one database.
func init() {
	bridge.Register(bridge.ConnectorType{
		Name:       "fakephone",
		NewOptions: func() any { return &fakeOptions{} },
		New: func(env bridge.Env, opts any) (bridge.Connector, error) {
			key := opts.(*fakeOptions).Phone
			phonesMu.Lock()
			p, ok := phones[key]
			phonesMu.Unlock()
			if !ok {
				return nil, fmt.Errorf("no fake phone %q", key)
			}
			p.record("new")
			return &fakeConn{p: p}, nil
		},
	})
}

type fakeOptions struct {
	Phone string `yaml:"phone"`
}

func (o *fakeOptions) Validate(c *config.Checker) { c.Required("phone", o.Phone) }

var (
	phonesMu sync.Mutex
	phones   = map[string]*Phone{}
	phoneSeq atomic.Int64
	// LinkedAccount is the account a new Phone is linked to.
	LinkedAccount = bridge.LinkAccount{ID: "15551234567@s.whatsapp.net", Handle: "+15551234567", Name: "Ann", Device: "android"}
)

// LinkScript is what a phone does when linked.
type LinkScript func(ctx context.Context, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error)

// Phone is the scripted state behind fakephone connectors.
type Phone struct {
	key   string
	since time.Time // the Since of the states it reports

	mu      sync.Mutex
	status  bridge.LinkStatus
	chats   []bridge.ChatInfo
	link    LinkScript
	opts    []bridge.LinkOptions
	unlinks []bool
	events  []string
	sink    bridge.Sink
	chatsBy map[string]bridge.ChatDescription
	people  map[string]bridge.SenderDescription
	media   map[string][]byte
	asked   map[string]int // DescribeChat and DescribeSender calls, by "chat "/"sender " and the id
}

// New makes a phone for this test, linked to LinkedAccount since since.
func New(t testing.TB, since time.Time) *Phone {
	t.Helper()
	p := &Phone{
		key:    fmt.Sprintf("phone-%d", phoneSeq.Add(1)),
		since:  since,
		status: bridge.LinkStatus{State: bridge.LinkConnected, Since: since, Account: LinkedAccount},
		chats: []bridge.ChatInfo{
			{ID: "15550001111@s.whatsapp.net", Name: "Bob"},
			{ID: "120363000000000001@g.us", Name: "Family", Group: true},
			{ID: "120363000000000002@g.us", Name: "Football friends", Group: true},
		},
	}
	phonesMu.Lock()
	phones[p.key] = p
	phonesMu.Unlock()
	t.Cleanup(func() {
		phonesMu.Lock()
		delete(phones, p.key)
		phonesMu.Unlock()
	})
	return p
}

// Key is the value of the config's `phone:` key for this phone.
func (p *Phone) Key() string { return p.key }

func (p *Phone) record(ev string) {
	p.mu.Lock()
	p.events = append(p.events, ev)
	p.mu.Unlock()
}

// SetLink scripts what linking does.
func (p *Phone) SetLink(s LinkScript) {
	p.mu.Lock()
	p.link = s
	p.mu.Unlock()
}

// SetStatus sets the state its connectors report.
func (p *Phone) SetStatus(st bridge.LinkStatus) {
	p.mu.Lock()
	p.status = st
	p.mu.Unlock()
}

// Recorded returns the link options, unlinks (local or not) and life-cycle
// events (new, start, stop) its connectors saw.
func (p *Phone) Recorded() (opts []bridge.LinkOptions, unlinks []bool, events []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.opts), slices.Clone(p.unlinks), slices.Clone(p.events)
}

type fakeConn struct{ p *Phone }

var (
	_ bridge.Linker      = (*fakeConn)(nil)
	_ bridge.ChatLister  = (*fakeConn)(nil)
	_ bridge.Describer   = (*fakeConn)(nil)
	_ bridge.MediaOpener = (*fakeConn)(nil)
)

func (c *fakeConn) Start(ctx context.Context, sink bridge.Sink) error {
	c.p.record("start")
	c.p.mu.Lock()
	c.p.sink = sink
	c.p.mu.Unlock()
	return nil
}

// Say submits ev from the phone, as a message arriving on it, and waits
// until the core committed it.
func (p *Phone) Say(t testing.TB, ev bridge.Event) {
	t.Helper()
	p.mu.Lock()
	sink := p.sink
	p.mu.Unlock()
	if sink == nil {
		t.Fatal("fakephone: Say before the connector started")
	}
	if err := bridge.Accept(t.Context(), sink, &ev); err != nil {
		t.Fatalf("fakephone: the core refused %s: %v", ev.ID, err)
	}
}

// Describe makes the phone describe chat, and sender in it when sender is
// not "", with a picture of the given bytes when picture is not nil.
func (p *Phone) Describe(chat bridge.ChatDescription, chatID string, sender bridge.SenderDescription, senderID string, picture []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.chatsBy == nil {
		p.chatsBy, p.people, p.media = map[string]bridge.ChatDescription{}, map[string]bridge.SenderDescription{}, map[string][]byte{}
	}
	if picture != nil {
		p.media["picture"] = picture
	}
	p.chatsBy[chatID] = chat
	if senderID != "" {
		p.people[senderID] = sender
	}
}

// Asked is how often the core asked the phone to describe id as a chat
// and as a sender.
func (p *Phone) Asked(id string) (chat, sender int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.asked["chat "+id], p.asked["sender "+id]
}

// Changed tells the core that what the phone says of id (a chat or a
// sender) changed, as WhatsApp's picture and topic notices do.
func (p *Phone) Changed(t testing.TB, id string) {
	t.Helper()
	p.mu.Lock()
	sink := p.sink
	p.mu.Unlock()
	if sink == nil {
		t.Fatal("fakephone: Changed before the connector started")
	}
	sink.DescriptionChanged(id)
}

func (p *Phone) ask(key string) {
	if p.asked == nil {
		p.asked = map[string]int{}
	}
	p.asked[key]++
}

func (c *fakeConn) DescribeChat(ctx context.Context, chat string) (bridge.ChatDescription, error) {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	c.p.ask("chat " + chat)
	d, ok := c.p.chatsBy[chat]
	if !ok {
		return d, fmt.Errorf("fakephone: chat %s is not described", chat)
	}
	return d, nil
}

func (c *fakeConn) DescribeSender(ctx context.Context, chat, sender string) (bridge.SenderDescription, error) {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	c.p.ask("sender " + sender)
	d, ok := c.p.people[sender]
	if !ok {
		return d, fmt.Errorf("fakephone: sender %s is not described", sender)
	}
	return d, nil
}

// OpenMedia serves the picture Describe gave, for any ref.
func (c *fakeConn) OpenMedia(ctx context.Context, m bridge.Media) (io.ReadCloser, error) {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	data, ok := c.p.media["picture"]
	if !ok {
		return nil, bridge.Permanentf("fakephone: no media %q", m.Ref)
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

func (c *fakeConn) Stop(ctx context.Context) error {
	c.p.record("stop")
	return nil
}

func (c *fakeConn) Send(ctx context.Context, out *bridge.Outgoing) (string, error) { return "", nil }

func (c *fakeConn) Capabilities() bridge.Capabilities { return bridge.Capabilities{} }

func (c *fakeConn) LinkStatus() bridge.LinkStatus {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	return c.p.status
}

func (c *fakeConn) Link(ctx context.Context, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
	c.p.mu.Lock()
	c.p.opts = append(c.p.opts, opts)
	script := c.p.link
	c.p.mu.Unlock()
	if script == nil {
		return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Cause: "the test gave the phone no link script"}
	}
	acct, err := script(ctx, opts, progress)
	if err == nil {
		c.p.SetStatus(bridge.LinkStatus{State: bridge.LinkConnected, Since: c.p.since, Account: acct})
	}
	return acct, err
}

func (c *fakeConn) Unlink(ctx context.Context, localOnly bool) error {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	c.p.unlinks = append(c.p.unlinks, localOnly)
	if c.p.status.Account.ID == "" {
		return &bridge.LinkError{Reason: bridge.LinkNotLinked, Service: "WhatsApp"}
	}
	c.p.status = bridge.LinkStatus{State: bridge.LinkUnlinked, Since: c.p.since}
	return nil
}

// Backfill records the request (Backfills lists them).
func (c *fakeConn) Backfill(ctx context.Context, chat string, count int) error {
	c.p.record(fmt.Sprintf("backfill %s %d", chat, count))
	return nil
}

func (c *fakeConn) Chats(ctx context.Context, search string) ([]bridge.ChatInfo, error) {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	var out []bridge.ChatInfo
	q := strings.ToLower(search)
	for _, ch := range c.p.chats {
		if strings.Contains(strings.ToLower(ch.Name), q) || strings.Contains(strings.ToLower(ch.ID), q) {
			out = append(out, ch)
		}
	}
	return out, nil
}
