package matrix

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
)

const inRoom = "!room:example.org"

// wireEvent decodes an event as a homeserver sends it.
func wireEvent(t *testing.T, js string) *event.Event {
	t.Helper()
	var evt event.Event
	if err := json.Unmarshal([]byte(js), &evt); err != nil {
		t.Fatalf("bad test event %s: %v", js, err)
	}
	evt.RoomID = inRoom
	return &evt
}

func TestConvertEventKinds(t *testing.T) {
	at := time.UnixMilli(1700000000123)
	base := func(kind bridge.Kind, id string) bridge.Event {
		return bridge.Event{Kind: kind, Chat: bridge.ChatRef{ID: inRoom}, ID: id,
			Sender: bridge.Sender{ID: "@ann:example.org", Name: "ann"}, Time: at}
	}
	with := func(e bridge.Event, f func(*bridge.Event)) *bridge.Event { f(&e); return &e }
	const head = `"sender":"@ann:example.org","origin_server_ts":1700000000123,`

	tests := []struct {
		name string
		js   string
		want *bridge.Event // nil: not relayed
	}{
		{"text", `{"type":"m.room.message","event_id":"$t",` + head + `"content":{"msgtype":"m.text","body":"hello"}}`,
			with(base(bridge.KindMessage, "$t"), func(e *bridge.Event) { e.Text = "hello" })},
		{"formatted", `{"type":"m.room.message","event_id":"$f",` + head + `"content":{"msgtype":"m.text","body":"**hi** there",
			"format":"org.matrix.custom.html","formatted_body":"<strong>hi</strong> <font color=\"red\">there</font>"}}`,
			with(base(bridge.KindMessage, "$f"), func(e *bridge.Event) { e.Text, e.HTML = "**hi** there", "<b>hi</b> there" })},
		{"notice", `{"type":"m.room.message","event_id":"$n",` + head + `"content":{"msgtype":"m.notice","body":"beep"}}`,
			with(base(bridge.KindMessage, "$n"), func(e *bridge.Event) { e.Text, e.Notice = "beep", true })},
		{"emote", `{"type":"m.room.message","event_id":"$e",` + head + `"content":{"msgtype":"m.emote","body":"waves"}}`,
			with(base(bridge.KindMessage, "$e"), func(e *bridge.Event) { e.Text, e.Emote = "waves", true })},
		{"reply with fallbacks", `{"type":"m.room.message","event_id":"$r",` + head + `"content":{"msgtype":"m.text",
			"body":"> <@bob:example.org> original\n> second line\n\nthe answer",
			"format":"org.matrix.custom.html",
			"formatted_body":"<mx-reply><blockquote><a href=\"https://matrix.to/#/!room:example.org/$o\">In reply to</a> <a href=\"https://matrix.to/#/@bob:example.org\">@bob:example.org</a><br>original</blockquote></mx-reply>the <em>answer</em>",
			"m.relates_to":{"m.in_reply_to":{"event_id":"$o"}}}}`,
			with(base(bridge.KindMessage, "$r"), func(e *bridge.Event) { e.Text, e.HTML, e.ReplyTo = "the answer", "the <i>answer</i>", "$o" })},
		{"reply without fallback", `{"type":"m.room.message","event_id":"$r2",` + head + `"content":{"msgtype":"m.text","body":"> quoted by hand\nyes",
			"m.relates_to":{"m.in_reply_to":{"event_id":"$o"}}}}`,
			with(base(bridge.KindMessage, "$r2"), func(e *bridge.Event) { e.Text, e.ReplyTo = "> quoted by hand\nyes", "$o" })},
		{"edit", `{"type":"m.room.message","event_id":"$ed",` + head + `"content":{"msgtype":"m.text","body":"* fixed",
			"m.new_content":{"msgtype":"m.text","body":"fixed","format":"org.matrix.custom.html","formatted_body":"<b>fixed</b>"},
			"m.relates_to":{"rel_type":"m.replace","event_id":"$t"}}}`,
			with(base(bridge.KindEdit, "$ed"), func(e *bridge.Event) { e.Text, e.HTML, e.Target = "fixed", "<b>fixed</b>", "$t" })},
		{"edit without new content", `{"type":"m.room.message","event_id":"$ed2",` + head + `"content":{"msgtype":"m.text","body":"* fixed too",
			"m.relates_to":{"rel_type":"m.replace","event_id":"$t"}}}`,
			with(base(bridge.KindEdit, "$ed2"), func(e *bridge.Event) { e.Text, e.Target = "fixed too", "$t" })},
		{"redaction", `{"type":"m.room.redaction","event_id":"$d","redacts":"$t",` + head + `"content":{}}`,
			with(base(bridge.KindDelete, "$d"), func(e *bridge.Event) { e.Target = "$t" })},
		{"redaction, room v11", `{"type":"m.room.redaction","event_id":"$d11",` + head + `"content":{"redacts":"$t"}}`,
			with(base(bridge.KindDelete, "$d11"), func(e *bridge.Event) { e.Target = "$t" })},
		{"reaction", `{"type":"m.reaction","event_id":"$re",` + head + `"content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$t","key":"👍"}}}`,
			with(base(bridge.KindReaction, "$re"), func(e *bridge.Event) { e.Target, e.Emoji = "$t", "👍" })},
		{"image with caption", `{"type":"m.room.message","event_id":"$i",` + head + `"content":{"msgtype":"m.image","body":"look at this","filename":"cat.png",
			"url":"mxc://example.org/abc","info":{"mimetype":"image/png","size":1234}}}`,
			with(base(bridge.KindMessage, "$i"), func(e *bridge.Event) {
				e.Text = "look at this"
				e.Media = []bridge.Media{{MIME: "image/png", Name: "cat.png", Size: 1234, Caption: "look at this", Ref: "mxc://example.org/abc"}}
			})},
		{"file", `{"type":"m.room.message","event_id":"$fi",` + head + `"content":{"msgtype":"m.file","body":"report.pdf",
			"url":"mxc://example.org/pdf","info":{"mimetype":"application/pdf","size":99}}}`,
			with(base(bridge.KindMessage, "$fi"), func(e *bridge.Event) {
				e.Media = []bridge.Media{{MIME: "application/pdf", Name: "report.pdf", Size: 99, Ref: "mxc://example.org/pdf"}}
			})},
		{"video without info", `{"type":"m.room.message","event_id":"$v",` + head + `"content":{"msgtype":"m.video","body":"clip.mp4","url":"mxc://example.org/v"}}`,
			with(base(bridge.KindMessage, "$v"), func(e *bridge.Event) {
				e.Media = []bridge.Media{{MIME: "video/mp4", Name: "clip.mp4", Ref: "mxc://example.org/v"}}
			})},
		{"audio", `{"type":"m.room.message","event_id":"$a",` + head + `"content":{"msgtype":"m.audio","body":"voice.ogg","url":"mxc://example.org/a","info":{"mimetype":"audio/ogg"}}}`,
			with(base(bridge.KindMessage, "$a"), func(e *bridge.Event) {
				e.Media = []bridge.Media{{MIME: "audio/ogg", Name: "voice.ogg", Ref: "mxc://example.org/a"}}
			})},
		{"sticker", `{"type":"m.sticker","event_id":"$s",` + head + `"content":{"body":"party","url":"mxc://example.org/s","info":{"mimetype":"image/webp"}}}`,
			with(base(bridge.KindMessage, "$s"), func(e *bridge.Event) {
				e.Media = []bridge.Media{{MIME: "image/webp", Name: "party", Ref: "mxc://example.org/s"}}
			})},
		{"location", `{"type":"m.room.message","event_id":"$l",` + head + `"content":{"msgtype":"m.location","body":"Here","geo_uri":"geo:51.5,-0.1"}}`,
			with(base(bridge.KindMessage, "$l"), func(e *bridge.Event) { e.Text = "Here geo:51.5,-0.1" })},
		{"encrypted media", `{"type":"m.room.message","event_id":"$x",` + head + `"content":{"msgtype":"m.image","body":"secret.png","file":{"url":"mxc://example.org/enc"}}}`, nil},
		{"empty text", `{"type":"m.room.message","event_id":"$z",` + head + `"content":{"msgtype":"m.text","body":""}}`, nil},
		{"state", `{"type":"m.room.name","event_id":"$st","state_key":"",` + head + `"content":{"name":"Room"}}`, nil},
		{"encrypted", `{"type":"m.room.encrypted","event_id":"$enc",` + head + `"content":{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"..."}}`, nil},
		{"unknown type", `{"type":"org.example.custom","event_id":"$u",` + head + `"content":{"body":"x"}}`, nil},
		{"reaction without key", `{"type":"m.reaction","event_id":"$rk",` + head + `"content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$t"}}}`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := convertEvent(wireEvent(t, tc.js))
			if tc.want == nil {
				if ok {
					t.Fatalf("relayed %+v, want it skipped", got)
				}
				return
			}
			if !ok {
				t.Fatal("skipped, want it relayed")
			}
			if !got.Time.Equal(tc.want.Time) {
				t.Errorf("time %v, want %v", got.Time, tc.want.Time)
			}
			got.Time = tc.want.Time
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
			if err := got.Check(); err != nil {
				t.Errorf("the core would refuse it: %v", err)
			}
		})
	}
}

func TestNormalizeHTML(t *testing.T) {
	tests := map[string]string{
		"plain & simple": "plain &amp; simple",
		"<strong>b</strong><em>i</em><del>s</del><ins>u</ins>":              "<b>b</b><i>i</i><s>s</s><u>u</u>",
		`<a href="https://example.org/?a=1&b=2">x</a>`:                      `<a href="https://example.org/?a=1&amp;b=2">x</a>`,
		`<a href="javascript:alert(1)">click</a>`:                           "click",
		`<span data-mx-spoiler>hidden</span> <font color="#f00">red</font>`: "hidden red",
		"<mx-reply><blockquote>old</blockquote></mx-reply>new":              "new",
		"<h1>Title</h1>text":                                   "<p><b>Title</b></p>text",
		`<img src="mxc://x/y" alt=":party:"> yay`:              ":party: yay",
		"<pre><code class=\"language-go\">x := 1</code></pre>": "<pre><code>x := 1</code></pre>",
		"<ul><li>one</li><li>two</li></ul>":                    "<ul><li>one</li><li>two</li></ul>",
		"line<br/>break<script>alert(1)</script>":              "line<br>break",
		"<p>unclosed <b>bold":                                  "<p>unclosed <b>bold</b></p>",
	}
	for in, want := range tests {
		if got := normalizeHTML(in); got != want {
			t.Errorf("normalizeHTML(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestConvertEphemeral(t *testing.T) {
	c := &Connector{self: "@bot:example.org", typing: map[id.RoomID]map[id.UserID]bool{}}
	typing := func(users string) []string {
		var out []string
		for _, ev := range c.convertEphemeral(wireEvent(t, `{"type":"m.typing","content":{"user_ids":`+users+`}}`)) {
			if ev.Kind != bridge.KindTyping || ev.Chat.ID != inRoom {
				t.Errorf("got %+v, want a typing event in %s", ev, inRoom)
			}
			out = append(out, ev.Sender.ID)
		}
		return out
	}
	if got := typing(`["@ann:example.org","@bot:example.org"]`); !reflect.DeepEqual(got, []string{"@ann:example.org"}) {
		t.Errorf("first typing list: %v, want ann (not the bot)", got)
	}
	if got := typing(`["@ann:example.org","@bob:example.org"]`); !reflect.DeepEqual(got, []string{"@bob:example.org"}) {
		t.Errorf("second list: %v, want only bob, who started", got)
	}
	if got := typing(`[]`); len(got) != 0 {
		t.Errorf("empty list: %v, want nothing", got)
	}
	if got := typing(`["@ann:example.org"]`); !reflect.DeepEqual(got, []string{"@ann:example.org"}) {
		t.Errorf("typing again after stopping: %v, want ann", got)
	}

	receipts := c.convertEphemeral(wireEvent(t, `{"type":"m.receipt","content":{
		"$b":{"m.read":{"@bot:example.org":{"ts":1},"@bob:example.org":{"ts":1700000000000}}},
		"$a":{"m.read":{"@ann:example.org":{"ts":1700000000000}},"m.read.private":{"@eve:example.org":{"ts":1}}}}}`))
	var got []string
	for _, ev := range receipts {
		if ev.Kind != bridge.KindRead {
			t.Errorf("got %+v, want a read event", ev)
		}
		got = append(got, ev.Sender.ID+" read "+ev.Target)
	}
	want := []string{"@ann:example.org read $a", "@bob:example.org read $b"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("receipts: %v, want %v (public ones, not the bot's)", got, want)
	}
}

func TestRoomCacheLearnsNames(t *testing.T) {
	rc := newRoomCache()
	rc.learn(inRoom, []*event.Event{
		wireEvent(t, `{"type":"m.room.name","state_key":"","content":{"name":"Family"}}`),
		wireEvent(t, `{"type":"m.room.member","state_key":"@ann:example.org","content":{"membership":"join","displayname":"Ann A."}}`),
		wireEvent(t, `{"type":"m.room.member","state_key":"@bob:example.org","content":{"membership":"join"}}`),
		wireEvent(t, `{"type":"m.room.message","content":{"body":"not state"}}`),
	})
	// A nil client: a cache miss would call it and panic.
	if got := rc.roomName(t.Context(), nil, inRoom); got != "Family" {
		t.Errorf("room name %q, want Family", got)
	}
	if got := rc.memberName(t.Context(), nil, inRoom, "@ann:example.org"); got != "Ann A." {
		t.Errorf("ann's name %q, want her display name", got)
	}
	if got := rc.memberName(t.Context(), nil, inRoom, "@bob:example.org"); got != "bob" {
		t.Errorf("bob's name %q, want his localpart (no display name)", got)
	}
}
