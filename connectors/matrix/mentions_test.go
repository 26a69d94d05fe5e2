package matrix

import (
	"reflect"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
)

func TestPillsOf(t *testing.T) {
	html := `hi <a href="https://matrix.to/#/%40bob%3Aexample.org">Bob</a>, <a href='x'>no</a> ` +
		`<a href="matrix:u/carol:example.org?action=chat">Carol &amp; Co</a> <a href="https://matrix.to/#/!room:example.org">a room</a> ` +
		`<a href="https://matrix.to/#/@dave:example.org">Dave</a>`
	got := pillsOf(html, "hi Bob, no Carol & Co a room")
	want := []bridge.Mention{
		{ID: "@bob:example.org", Name: "Bob", Text: "Bob"},
		{ID: "@carol:example.org", Name: "Carol & Co", Text: "Carol & Co"},
		// Dave's pill has no words in the text: nothing to point at.
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("pills %+v, want %+v", got, want)
	}
}

// A ghost's localpart gives back the sender it speaks for, whatever the
// id's bytes; a localpart cut to fit does not pretend to.
func TestGhostSenderReversesTheLocalpart(t *testing.T) {
	for _, sender := range []string{"15550002222@s.whatsapp.net", "dan", "Über Ämter=1", "a/b.c_d-e", "=", ""} {
		local := ghostLocalpart("wa_", "localhost", sender)
		if got, ok := ghostSender("wa_", local); !ok || got != sender {
			t.Errorf("%q → %q → %q, %v", sender, local, got, ok)
		}
	}
	long := ghostLocalpart("wa_", "localhost", string(make([]byte, 300)))
	if _, ok := ghostSender("wa_", long); ok {
		t.Error("a cut localpart was reversed")
	}
	if _, ok := ghostSender("wa_", "someone_else"); ok {
		t.Error("a localpart without the prefix was reversed")
	}
}

func TestWithPills(t *testing.T) {
	content := &event.MessageEventContent{MsgType: event.MsgText, Body: "Carol: @Ann & @Zed and @nobody"}
	resolve := func(m bridge.Mention) id.UserID {
		if m.Owner {
			return "@ann:example.org"
		}
		if m.ID == "zed" {
			return "@wa_zed:example.org"
		}
		return ""
	}
	withPills(content, []bridge.Mention{{Owner: true, Text: "@Ann"}, {ID: "zed", Text: "@Zed"}, {ID: "x", Text: "@nobody"}, {ID: "zed", Text: "@missing"}}, resolve)
	want := `Carol: <a href="https://matrix.to/#/@ann:example.org">@Ann</a> &amp; <a href="https://matrix.to/#/@wa_zed:example.org">@Zed</a> and @nobody`
	if content.FormattedBody != want || content.Format != event.FormatHTML {
		t.Errorf("formatted %q, want %q", content.FormattedBody, want)
	}
	if content.Mentions == nil || !reflect.DeepEqual(content.Mentions.UserIDs, []id.UserID{"@ann:example.org", "@wa_zed:example.org"}) {
		t.Errorf("m.mentions %+v", content.Mentions)
	}
}
