package matrix

import (
	"regexp"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

func TestGhostID(t *testing.T) {
	b := unitASBridge(asOptions())
	for sender, want := range map[string]id.UserID{
		"15551234567@s.whatsapp.net": "@wa_15551234567=40s.whatsapp.net:example.org",
		"abc.def_ghi-jkl/mno":        "@wa_abc.def_ghi-jkl/mno:example.org",
		"Bob":                        "@wa_=42ob:example.org",
		"a=b":                        "@wa_a=3db:example.org",
		"é":                          "@wa_=c3=a9:example.org",
		"":                           "@wa_:example.org",
	} {
		if got := b.ghostID(sender); got != want {
			t.Errorf("ghostID(%q) = %q, want %q", sender, got, want)
		}
	}

	// Distinct senders never share a ghost, including those that differ
	// only in case or look like an escape.
	senders := []string{"a", "A", "=41", "=61", "a=", "a==", "=", "==", "=3d", "a b", "a_b", "a.b", "a:b", "a@b", "ab", "Ab", "aB", "\x00", "\xff", ""}
	long := strings.Repeat("x", 300)
	senders = append(senders, long, long+"y", strings.Repeat("X", 300), strings.Repeat("X", 300)+"=")
	seen := map[id.UserID]string{}
	for _, s := range senders {
		g := b.ghostID(s)
		if prev, dup := seen[g]; dup {
			t.Errorf("senders %q and %q share the ghost %s", prev, s, g)
		}
		seen[g] = s
		if len(g) > maxUserIDLength {
			t.Errorf("ghost for %q is %d bytes, over the spec's %d", s, len(g), maxUserIDLength)
		}
		if !b.isGhost(g) {
			t.Errorf("ghost %s for %q is not recognised as a ghost", g, s)
		}
		if b.ghostID(s) != g {
			t.Errorf("ghostID(%q) is not deterministic", s)
		}
	}
	// Every ghost is whole escapes, then, when cut, "==" and a digest.
	grammar := regexp.MustCompile(`^@wa_(?:[a-z0-9._/-]|=[0-9a-f]{2})*(?:==[0-9a-f]{16})?:example\.org$`)
	for g, s := range seen {
		if !grammar.MatchString(string(g)) {
			t.Errorf("ghost %s for %q is not escapes and a digest", g, s)
		}
	}
	if g := b.ghostID(strings.Repeat("X", 300)); !strings.Contains(string(g), "==") {
		t.Errorf("long ghost %s was not cut", g)
	}

	for u, want := range map[id.UserID]bool{
		"@wa_123:example.org":           true,
		"@wa_123:other.org":             false,
		"@wb_123:example.org":           false,
		"@wa_ABC:example.org":           false, // ghostLocalpart never writes capitals
		"@phonebridgebot:example.org":   false,
		"@wa_1:example.org:example.org": false,
	} {
		if got := b.isGhost(u); got != want {
			t.Errorf("isGhost(%q) = %v, want %v", u, got, want)
		}
	}
}

func TestGhostDisplayName(t *testing.T) {
	b := unitASBridge(asOptions())
	if got := b.ghostDisplayName("Alice"); got != "Alice (WhatsApp)" {
		t.Errorf("ghostDisplayName = %q", got)
	}
}
