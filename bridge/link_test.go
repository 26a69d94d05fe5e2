package bridge_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/bridgetest"
	"github.com/phonebridge/phonebridge/config"
)

// consoleFake is a connector with a management console (as the Matrix
// bot's management room) that notes whether it had the admin at Start.
type consoleFake struct {
	*bridgetest.Fake
	admin        bridge.LinkAdmin
	adminAtStart bool
}

func (c *consoleFake) SetLinkAdmin(a bridge.LinkAdmin) { c.admin = a }

func (c *consoleFake) Start(ctx context.Context, sink bridge.Sink) error {
	c.adminAtStart = c.admin != nil
	return c.Fake.Start(ctx, sink)
}

// linkerFake links an account, for the console to see.
type linkerFake struct {
	*bridgetest.Fake
}

func (linkerFake) LinkStatus() bridge.LinkStatus {
	return bridge.LinkStatus{State: bridge.LinkConnected}
}

func (linkerFake) Link(context.Context, bridge.LinkOptions, func(bridge.LinkProgress)) (bridge.LinkAccount, error) {
	return bridge.LinkAccount{}, nil
}

func (linkerFake) Unlink(context.Context, bool) error { return nil }

func TestLinkConsoleGetsTheCoresLinksBeforeStart(t *testing.T) {
	cfg := config.Defaults()
	console := &consoleFake{Fake: bridgetest.NewFake("mx", all)}
	phone := linkerFake{bridgetest.NewFake("phone", all)}
	startBridge(t, map[string]bridge.Connector{"mx": console, "phone": phone}, &cfg)
	if !console.adminAtStart {
		t.Fatal("the console connector was started without the core's link admin")
	}
	links := console.admin.Links()
	if len(links) != 1 || links[0].Name != "phone" || links[0].State != bridge.LinkConnected {
		t.Errorf("the console sees links %+v, want phone connected", links)
	}
	if _, ok := console.admin.Linker("phone"); !ok {
		t.Error("the console cannot reach the phone's linker")
	}
	if _, ok := console.admin.Linker("mx"); ok {
		t.Error("the console sees a linker in a connector that links nothing")
	}
}

// listerFake lists two chats.
type listerFake struct{ *bridgetest.Fake }

func (listerFake) Chats(context.Context, string) ([]bridge.ChatInfo, error) {
	return []bridge.ChatInfo{{ID: "g1", Name: "Family", Group: true}, {ID: "u1", Name: "Bob"}}, nil
}

// mirrorFake records the chats it is asked to mirror.
type mirrorFake struct {
	*bridgetest.Fake
	got chan string
}

func (m mirrorFake) MirrorChats(origin string, chats []bridge.ChatInfo) {
	for _, c := range chats {
		m.got <- origin + "/" + c.ID
	}
}

func TestChatMirrorGetsTheOriginsChats(t *testing.T) {
	cfg := config.Defaults()
	// phone's chats all reach mx; mx's never reach quiet, which only
	// sends, so quiet's would never be mirrored even if it listed them.
	out := bridgetest.Route("one-way", "quiet/*", "mx/*")
	out.Endpoints[1].Direction = config.In
	cfg.Routes = []config.Route{bridgetest.Route("all", "phone/*", "mx/*"), out}
	mirror := mirrorFake{bridgetest.NewFake("mx", all), make(chan string, 10)}
	conns := map[string]bridge.Connector{
		"phone": listerFake{bridgetest.NewFake("phone", all)},
		"quiet": listerFake{bridgetest.NewFake("quiet", all)},
		"mx":    mirror,
	}
	startBridge(t, conns, &cfg)
	got := map[string]bool{}
	for len(got) < 2 {
		select {
		case c := <-mirror.got:
			got[c] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("the mirror got %v, want phone's two chats", got)
		}
	}
	if !got["phone/g1"] || !got["phone/u1"] {
		t.Errorf("the mirror got %v, want phone/g1 and phone/u1", got)
	}
	select {
	case c := <-mirror.got:
		t.Errorf("the mirror also got %s, from a route that does not carry it", c)
	case <-time.After(200 * time.Millisecond):
	}
}

// startBridge starts a bridge over conns on a store in a temp dir, stopped
// at cleanup.
func startBridge(t *testing.T, conns map[string]bridge.Connector, cfg *config.Config) *bridge.Bridge {
	t.Helper()
	store, err := bridge.OpenStore(filepath.Join(t.TempDir(), "bridge.db"), "normal")
	if err != nil {
		t.Fatal(err)
	}
	b := bridge.New(store, conns, cfg, slog.New(slog.DiscardHandler))
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b.Stop(ctx)
		store.Close()
	})
	return b
}
