package matrix

import (
	"testing"

	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"
)

// unitASBridge is an asBridge for tests that reach neither a store nor a
// homeserver.
func unitASBridge(o *Options) *asBridge {
	reg := &appservice.Registration{SenderLocalpart: o.BotLocalpart}
	return &asBridge{opts: o, reg: reg, bot: id.NewUserID(o.BotLocalpart, o.Domain), owner: id.UserID(o.Owner)}
}

func TestAllowed(t *testing.T) {
	o := asOptions()
	o.Allow = []string{"@friend:other.org", "trusted.net", "Example.com"}
	b := unitASBridge(o)
	for u, want := range map[id.UserID]bool{
		"@owner:example.org":          true,
		"@friend:other.org":           true,
		"@anyone:trusted.net":         true,
		"@anyone:EXAMPLE.com":         true, // server names ignore case
		"@stranger:example.org":       false,
		"@friend2:other.org":          false,
		"@friend:other.org.evil":      false,
		"@x:sub.trusted.net":          false, // a domain is exact, not its subdomains
		"@x:trusted.net.evil":         false,
		"@phonebridgebot:example.org": false, // the bridge's own users
		"@wa_123:example.org":         false,
		"not a user id":               false,
		"":                            false,
	} {
		if got := b.allowed(u); got != want {
			t.Errorf("allowed(%q) = %v, want %v", u, got, want)
		}
	}
	// Ghosts stay refused even when their server is allowed.
	o.Allow = []string{"example.org"}
	if b.allowed("@wa_123:example.org") || b.allowed("@phonebridgebot:example.org") || !b.allowed("@someone:example.org") {
		t.Error("with example.org allowed: ghosts or the bot allowed, or a user refused")
	}
}
