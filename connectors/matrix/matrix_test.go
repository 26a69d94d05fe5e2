package matrix

import (
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
)

func TestAppserviceStartNeedsTheRegistration(t *testing.T) {
	store, err := bridge.OpenStore(filepath.Join(t.TempDir(), "bridge.db"), "normal")
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	o := NewOptions() // appservice is the default mode
	o.Registration = "missing.yaml"
	dir := t.TempDir()
	c, err := New(bridge.Env{Name: "mx", Logger: slog.New(slog.DiscardHandler), Store: store, ConfigDir: dir}, o)
	if err != nil {
		t.Fatalf("appservice mode: %v", err)
	}
	err = c.Start(t.Context(), &recordingSink{})
	want := filepath.Join(dir, "missing.yaml") + " does not exist: run `phonebridge matrix registration mx`"
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
		t.Errorf("Start without a registration: %v; want one line containing %q", err, want)
	}
	if !c.IsChatID("15551234567@s.whatsapp.net") || !c.IsChatID("general") {
		t.Error("appservice mode refuses a chat id; it makes a portal for any")
	}
	o.Mode = "nonsense"
	if _, err := New(bridge.Env{Name: "mx", Store: store}, o); err == nil {
		t.Error("mode nonsense was accepted")
	}
}

func TestTypeIsRegistered(t *testing.T) {
	typ, ok := bridge.LookupType("matrix")
	if !ok {
		t.Fatal("type matrix is not registered")
	}
	cfg, err := config.Parse([]byte(`
state_dir: ./state
connectors:
  mx:
    type: matrix
    mode: bot
    homeserver: https://matrix.example.org
    domain: example.org
    user_id: "@bridge:example.org"
    password: secret-password
`), filepath.Join(t.TempDir(), "phonebridge.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.Connectors["mx"].Options.(*Options)
	if o.SyncTimeout != DefaultSyncTimeout || o.SenderFormat != DefaultSenderFormat {
		t.Errorf("defaults not applied: %+v", o)
	}
	c, err := typ.New(bridge.Env{Name: "mx", Store: nil}, o)
	if err == nil || !strings.Contains(err.Error(), "store") {
		t.Errorf("New without a store: %v, %v", c, err)
	}
}

func TestChatIDsAndResolution(t *testing.T) {
	f := newFakeHS(t)
	c := newFakeBot(t, f)
	for chat, want := range map[string]bool{"!abc:example.org": true, "#room:example.org": false, "general": false, "!nocolon": false} {
		if got := c.IsChatID(chat); got != want {
			t.Errorf("IsChatID(%q) = %v, want %v", chat, got, want)
		}
	}
	if got, err := c.ResolveChat(t.Context(), "!abc:example.org"); err != nil || got != "!abc:example.org" {
		t.Errorf("a room id resolves to %q, %v", got, err)
	}
	if _, err := c.ResolveChat(t.Context(), "general"); err == nil || !strings.Contains(err.Error(), "neither a Matrix room id") {
		t.Errorf("a bare name: %v", err)
	}
	// The fake has no room directory: M_UNRECOGNIZED is a definite no.
	if _, err := c.ResolveChat(t.Context(), "#nowhere:example.org"); err == nil || !strings.Contains(err.Error(), "#nowhere:example.org does not resolve") {
		t.Errorf("an unknown alias: %v", err)
	}
	f.srv.Close()
	if _, err := c.ResolveChat(t.Context(), "#later:example.org"); !errors.Is(err, bridge.ErrChatListUnavailable) {
		t.Errorf("an alias while the homeserver is down: %v, want it to wait (ErrChatListUnavailable)", err)
	}
}
