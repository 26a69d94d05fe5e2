package daemon_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
)

// fakephone is a connector type that links like WhatsApp without a
// server: each connector stands for a phone a test scripts, found by the
// `phone:` key of its config section. Every connector built for one phone
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
	phonesMu  sync.Mutex
	phones    = map[string]*phone{}
	phoneSeq  atomic.Int64
	linkedAcc = bridge.LinkAccount{ID: "15551234567@s.whatsapp.net", Phone: "+15551234567", PushName: "Ann", Platform: "android"}
)

// linkScript is what a phone does when linked.
type linkScript func(ctx context.Context, opts bridge.LinkOptions, progress func(bridge.LinkProgress)) (bridge.LinkAccount, error)

// phone is the scripted state behind fakephone connectors.
type phone struct {
	key string

	mu      sync.Mutex
	status  bridge.LinkStatus
	chats   []bridge.ChatInfo
	link    linkScript
	opts    []bridge.LinkOptions
	unlinks []bool
	events  []string
}

// newPhone makes a phone for this test, linked to linkedAcc.
func newPhone(t *testing.T) *phone {
	t.Helper()
	p := &phone{
		key:    fmt.Sprintf("phone-%d", phoneSeq.Add(1)),
		status: bridge.LinkStatus{State: bridge.LinkConnected, Since: t0, Account: linkedAcc},
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

func (p *phone) record(ev string) {
	p.mu.Lock()
	p.events = append(p.events, ev)
	p.mu.Unlock()
}

func (p *phone) setLink(s linkScript) {
	p.mu.Lock()
	p.link = s
	p.mu.Unlock()
}

func (p *phone) setStatus(st bridge.LinkStatus) {
	p.mu.Lock()
	p.status = st
	p.mu.Unlock()
}

func (p *phone) recorded() (opts []bridge.LinkOptions, unlinks []bool, events []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.opts), slices.Clone(p.unlinks), slices.Clone(p.events)
}

type fakeConn struct{ p *phone }

var (
	_ bridge.Linker     = (*fakeConn)(nil)
	_ bridge.ChatLister = (*fakeConn)(nil)
)

func (c *fakeConn) Start(ctx context.Context, sink bridge.Sink) error {
	c.p.record("start")
	return nil
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
		return bridge.LinkAccount{}, &bridge.LinkError{Reason: bridge.LinkFailed, Detail: "the test gave the phone no link script"}
	}
	acct, err := script(ctx, opts, progress)
	if err == nil {
		c.p.setStatus(bridge.LinkStatus{State: bridge.LinkConnected, Since: t0, Account: acct})
	}
	return acct, err
}

func (c *fakeConn) Unlink(ctx context.Context, localOnly bool) error {
	c.p.mu.Lock()
	defer c.p.mu.Unlock()
	c.p.unlinks = append(c.p.unlinks, localOnly)
	if c.p.status.Account.ID == "" {
		return &bridge.LinkError{Reason: bridge.LinkFailed, Detail: "not linked"}
	}
	c.p.status = bridge.LinkStatus{State: bridge.LinkUnlinked, Since: t0}
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
