package matrix

import (
	"fmt"
	"testing"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
)

// TestMirrorTakesWhatPortalsAtStartSays: which listed chats get portals
// before their first message.
func TestMirrorTakesWhatPortalsAtStartSays(t *testing.T) {
	chats := []bridge.ChatInfo{{ID: "g1@g.us", Name: "Family", Group: true}, {ID: "u1@s.whatsapp.net", Name: "Bob"}}
	for _, c := range []struct {
		mode, portals string
		want          string
	}{
		{ModeAppservice, PortalsGroups, "[g1@g.us]"},
		{ModeAppservice, PortalsAll, "[g1@g.us u1@s.whatsapp.net]"},
		{ModeAppservice, PortalsNone, "[]"},
		{ModeBot, PortalsAll, "[]"}, // bot mode makes no rooms
	} {
		o := asOptions()
		o.Mode, o.PortalsAtStart = c.mode, c.portals
		conn, err := New(bridge.Env{Name: "mx", Store: openTestStore(t)}, o)
		if err != nil {
			t.Fatal(err)
		}
		conn.MirrorChats("phone", chats)
		var ids []string
		for _, ch := range conn.mirror["phone"] {
			ids = append(ids, ch.ID)
		}
		if got := fmt.Sprint(ids); got != c.want && !(c.want == "[]" && ids == nil) {
			t.Errorf("%s mode, portals_at_start %s: mirrors %s, want %s", c.mode, c.portals, got, c.want)
		}
	}
	o := asOptions()
	o.PortalsAtStart = "some"
	var problems []config.Problem
	o.Validate(config.NewChecker("connectors.mx", &problems))
	if len(problems) != 1 || problems[0].Path != "connectors.mx.portals_at_start" {
		t.Errorf("portals_at_start: some gave problems %v, want one at its path", problems)
	}
}
