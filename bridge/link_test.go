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
	store, err := bridge.OpenStore(filepath.Join(t.TempDir(), "bridge.db"), "normal")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	console := &consoleFake{Fake: bridgetest.NewFake("mx", all)}
	phone := linkerFake{bridgetest.NewFake("phone", all)}
	b := bridge.New(store, map[string]bridge.Connector{"mx": console, "phone": phone}, &cfg, slog.New(slog.DiscardHandler))
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b.Stop(ctx)
		store.Close()
	})
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
