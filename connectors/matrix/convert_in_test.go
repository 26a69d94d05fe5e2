package matrix

import (
	"encoding/json"
	"reflect"
	"strings"
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
		{"sticker", `{"type":"m.sticker","event_id":"$s",` + head + `"content":{"body":"party","url":"mxc://example.org/s","info":{"mimetype":"image/webp","w":256,"h":200}}}`,
			with(base(bridge.KindMessage, "$s"), func(e *bridge.Event) {
				e.Media = []bridge.Media{{MIME: "image/webp", Name: "party", Ref: "mxc://example.org/s", Kind: bridge.MediaSticker, Width: 256, Height: 200}}
			})},
		{"sticker with a msgtype", `{"type":"m.sticker","event_id":"$s2",` + head + `"content":{"msgtype":"m.text","body":"wave","url":"mxc://example.org/s2"}}`,
			with(base(bridge.KindMessage, "$s2"), func(e *bridge.Event) {
				e.Media = []bridge.Media{{MIME: "image/jpeg", Name: "wave", Ref: "mxc://example.org/s2", Kind: bridge.MediaSticker}}
			})},
		{"voice, as Element sends it", `{"type":"m.room.message","event_id":"$vo",` + head + `"content":{"msgtype":"m.audio","body":"Voice message",
			"url":"mxc://example.org/vo","info":{"mimetype":"audio/ogg","size":5000,"duration":4321},
			"org.matrix.msc1767.audio":{"duration":4321,"waveform":[0,12,1024,512]},"org.matrix.msc3245.voice":{}}}`,
			with(base(bridge.KindMessage, "$vo"), func(e *bridge.Event) {
				e.Media = []bridge.Media{{MIME: "audio/ogg", Name: "Voice message", Size: 5000, Ref: "mxc://example.org/vo",
					Kind: bridge.MediaVoice, DurationMS: 4321, Waveform: []int{0, 12, 1024, 512}}}
			})},
		{"voice, its length only in MSC1767, its waveform out of bounds", `{"type":"m.room.message","event_id":"$vo2",` + head + `"content":{"msgtype":"m.audio","body":"v.ogg",
			"url":"mxc://example.org/vo2","org.matrix.msc1767.audio":{"duration":1500.4,"waveform":[-3,2000,7.6]},"org.matrix.msc3245.voice":{}}}`,
			with(base(bridge.KindMessage, "$vo2"), func(e *bridge.Event) {
				e.Media = []bridge.Media{{MIME: "audio/ogg", Name: "v.ogg", Ref: "mxc://example.org/vo2",
					Kind: bridge.MediaVoice, DurationMS: 1500, Waveform: []int{0, 1024, 8}}}
			})},
		{"voice with a waveform that is not one", `{"type":"m.room.message","event_id":"$vo3",` + head + `"content":{"msgtype":"m.audio","body":"v.ogg",
			"url":"mxc://example.org/vo3","info":{"duration":-5},"org.matrix.msc1767.audio":{"duration":"long","waveform":"loud"},"org.matrix.msc3245.voice":true}}`,
			with(base(bridge.KindMessage, "$vo3"), func(e *bridge.Event) {
				e.Media = []bridge.Media{{MIME: "audio/ogg", Name: "v.ogg", Ref: "mxc://example.org/vo3", Kind: bridge.MediaVoice}}
			})},
		{"audio with a null voice key is plain audio", `{"type":"m.room.message","event_id":"$a2",` + head + `"content":{"msgtype":"m.audio","body":"song.mp3",
			"url":"mxc://example.org/a2","info":{"mimetype":"audio/mpeg","duration":180000},"org.matrix.msc3245.voice":null}}`,
			with(base(bridge.KindMessage, "$a2"), func(e *bridge.Event) {
				e.Media = []bridge.Media{{MIME: "audio/mpeg", Name: "song.mp3", Ref: "mxc://example.org/a2", DurationMS: 180000}}
			})},
		{"image with its size", `{"type":"m.room.message","event_id":"$iw",` + head + `"content":{"msgtype":"m.image","body":"cat.png",
			"url":"mxc://example.org/iw","info":{"mimetype":"image/png","w":640,"h":480.0}}}`,
			with(base(bridge.KindMessage, "$iw"), func(e *bridge.Event) {
				e.Media = []bridge.Media{{MIME: "image/png", Name: "cat.png", Ref: "mxc://example.org/iw", Width: 640, Height: 480}}
			})},
		{"image with a size out of bounds", `{"type":"m.room.message","event_id":"$ib",` + head + `"content":{"msgtype":"m.image","body":"x.png",
			"url":"mxc://example.org/ib","info":{"mimetype":"image/png","w":1e300,"h":-4,"size":1e300}}}`,
			with(base(bridge.KindMessage, "$ib"), func(e *bridge.Event) {
				e.Media = []bridge.Media{{MIME: "image/png", Name: "x.png", Ref: "mxc://example.org/ib"}}
			})},
		{"video with its size and length", `{"type":"m.room.message","event_id":"$vw",` + head + `"content":{"msgtype":"m.video","body":"clip.mp4",
			"url":"mxc://example.org/vw","info":{"mimetype":"video/mp4","w":1280,"h":720,"duration":12000}}}`,
			with(base(bridge.KindMessage, "$vw"), func(e *bridge.Event) {
				e.Media = []bridge.Media{{MIME: "video/mp4", Name: "clip.mp4", Ref: "mxc://example.org/vw", Width: 1280, Height: 720, DurationMS: 12000}}
			})},
		{"GIF from a mautrix bridge", `{"type":"m.room.message","event_id":"$g",` + head + `"content":{"msgtype":"m.video","body":"funny",
			"filename":"funny.mp4","url":"mxc://example.org/g","info":{"mimetype":"video/mp4","w":320,"h":240,"duration":2000,
			"fi.mau.gif":true,"fi.mau.loop":true,"fi.mau.autoplay":true,"fi.mau.hide_controls":true,"fi.mau.no_audio":true}}}`,
			with(base(bridge.KindMessage, "$g"), func(e *bridge.Event) {
				e.Text = "funny"
				e.Media = []bridge.Media{{MIME: "video/mp4", Name: "funny.mp4", Caption: "funny", Ref: "mxc://example.org/g",
					Kind: bridge.MediaGIF, Width: 320, Height: 240, DurationMS: 2000}}
			})},
		{"looping video", `{"type":"m.room.message","event_id":"$g2",` + head + `"content":{"msgtype":"m.video","body":"loop.mp4",
			"url":"mxc://example.org/g2","info":{"mimetype":"video/mp4","fi.mau.loop":true}}}`,
			with(base(bridge.KindMessage, "$g2"), func(e *bridge.Event) {
				e.Media = []bridge.Media{{MIME: "video/mp4", Name: "loop.mp4", Ref: "mxc://example.org/g2", Kind: bridge.MediaGIF}}
			})},
		{"GIF image", `{"type":"m.room.message","event_id":"$g3",` + head + `"content":{"msgtype":"m.image","body":"dance.gif",
			"url":"mxc://example.org/g3","info":{"mimetype":"image/gif","w":100,"h":80}}}`,
			with(base(bridge.KindMessage, "$g3"), func(e *bridge.Event) {
				e.Media = []bridge.Media{{MIME: "image/gif", Name: "dance.gif", Ref: "mxc://example.org/g3", Kind: bridge.MediaGIF, Width: 100, Height: 80}}
			})},
		{"video with GIF flags false", `{"type":"m.room.message","event_id":"$g4",` + head + `"content":{"msgtype":"m.video","body":"v.mp4",
			"url":"mxc://example.org/g4","info":{"mimetype":"video/mp4","fi.mau.gif":false,"fi.mau.loop":"yes"}}}`,
			with(base(bridge.KindMessage, "$g4"), func(e *bridge.Event) {
				e.Media = []bridge.Media{{MIME: "video/mp4", Name: "v.mp4", Ref: "mxc://example.org/g4"}}
			})},
		{"location with a caption", `{"type":"m.room.message","event_id":"$l",` + head + `"content":{"msgtype":"m.location","body":"Here","geo_uri":"geo:51.5,-0.1"}}`,
			with(base(bridge.KindMessage, "$l"), func(e *bridge.Event) {
				e.Text, e.Location = "Here", &bridge.Location{Latitude: 51.5, Longitude: -0.1}
			})},
		{"location as Element sends it", `{"type":"m.room.message","event_id":"$l2",` + head + `"content":{"msgtype":"m.location",
			"body":"User Location \"Big Ben\" geo:51.5007,-0.1246;u=10 at 2024-05-01T10:00:00.000Z","geo_uri":"geo:51.5007,-0.1246;u=10",
			"org.matrix.msc3488.location":{"uri":"geo:51.5007,-0.1246;u=10","description":"Big Ben"},"org.matrix.msc3488.asset":{"type":"m.self"},
			"org.matrix.msc3488.ts":1714557600000,"org.matrix.msc1767.text":"User Location geo:51.5007,-0.1246;u=10 at 2024-05-01T10:00:00.000Z"}}`,
			with(base(bridge.KindMessage, "$l2"), func(e *bridge.Event) {
				e.Location = &bridge.Location{Latitude: 51.5007, Longitude: -0.1246, Name: "Big Ben"}
			})},
		{"location with the URI in its caption, and an altitude", `{"type":"m.room.message","event_id":"$l3",` + head + `"content":{"msgtype":"m.location",
			"body":"Meet me here\ngeo:-33.8568,151.2153,12","geo_uri":"GEO:-33.8568,151.2153,12;crs=wgs84"}}`,
			with(base(bridge.KindMessage, "$l3"), func(e *bridge.Event) {
				e.Text, e.Location = "Meet me here", &bridge.Location{Latitude: -33.8568, Longitude: 151.2153}
			})},
		{"location only in MSC3488", `{"type":"m.room.message","event_id":"$l4",` + head + `"content":{"msgtype":"m.location","body":"Office",
			"org.matrix.msc3488.location":{"uri":"geo:48.8584,2.2945","description":"Office"}}}`,
			with(base(bridge.KindMessage, "$l4"), func(e *bridge.Event) {
				e.Location = &bridge.Location{Latitude: 48.8584, Longitude: 2.2945, Name: "Office"}
			})},
		{"location replying", `{"type":"m.room.message","event_id":"$l5",` + head + `"content":{"msgtype":"m.location",
			"body":"> <@bob:example.org> where?\n\nLocation geo:1,2","geo_uri":"geo:1,2","m.relates_to":{"m.in_reply_to":{"event_id":"$o"}}}}`,
			with(base(bridge.KindMessage, "$l5"), func(e *bridge.Event) {
				e.Location, e.ReplyTo = &bridge.Location{Latitude: 1, Longitude: 2}, "$o"
			})},
		{"location off Earth: text", `{"type":"m.room.message","event_id":"$lx",` + head + `"content":{"msgtype":"m.location","body":"Moon base","geo_uri":"geo:91,10"}}`,
			with(base(bridge.KindMessage, "$lx"), func(e *bridge.Event) { e.Text = "Moon base geo:91,10" })},
		{"location malformed: text", `{"type":"m.room.message","event_id":"$ly",` + head + `"content":{"msgtype":"m.location","body":"somewhere","geo_uri":"geo:NaN,1e5"}}`,
			with(base(bridge.KindMessage, "$ly"), func(e *bridge.Event) { e.Text = "somewhere geo:NaN,1e5" })},
		{"location in another coordinate system: text", `{"type":"m.room.message","event_id":"$lz",` + head + `"content":{"msgtype":"m.location","body":"Mars","geo_uri":"geo:1,2;crs=mars2000"}}`,
			with(base(bridge.KindMessage, "$lz"), func(e *bridge.Event) { e.Text = "Mars geo:1,2;crs=mars2000" })},
		{"location without a place or text", `{"type":"m.room.message","event_id":"$le",` + head + `"content":{"msgtype":"m.location","body":"","geo_uri":"geo:"}}`,
			with(base(bridge.KindMessage, "$le"), func(e *bridge.Event) { e.Text = "geo:" })},
		{"location without anything", `{"type":"m.room.message","event_id":"$ln",` + head + `"content":{"msgtype":"m.location","body":""}}`, nil},
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
			if ev.StoppedTyping {
				out = append(out, "-"+ev.Sender.ID)
			} else {
				out = append(out, ev.Sender.ID)
			}
		}
		return out
	}
	if got := typing(`["@ann:example.org","@bot:example.org"]`); !reflect.DeepEqual(got, []string{"@ann:example.org"}) {
		t.Errorf("first typing list: %v, want ann (not the bot)", got)
	}
	if got := typing(`["@ann:example.org","@bob:example.org"]`); !reflect.DeepEqual(got, []string{"@bob:example.org"}) {
		t.Errorf("second list: %v, want only bob, who started", got)
	}
	if got := typing(`[]`); !reflect.DeepEqual(got, []string{"-@ann:example.org", "-@bob:example.org"}) {
		t.Errorf("empty list: %v, want ann and bob stopped", got)
	}
	if got := typing(`[]`); len(got) != 0 {
		t.Errorf("empty list again: %v, want nothing", got)
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

func TestParseGeoURI(t *testing.T) {
	good := map[string][2]float64{
		"geo:51.5,-0.1":                  {51.5, -0.1},
		"geo:51.5007,-0.1246;u=10":       {51.5007, -0.1246},
		"GEO:-33.8568,151.2153,12":       {-33.8568, 151.2153},
		"geo:1,2;crs=WGS84;u=3;x-a=b":    {1, 2},
		"geo:90,0":                       {90, 0},
		"geo:-90,180":                    {-90, 180},
		" geo:0,0 ":                      {0, 0},
		"geo:+1.5,2":                     {1.5, 2},
		"geo:-0,-0.000":                  {0, 0},
		"geo:12.345678901234567890,-170": {12.345678901234567890, -170},
	}
	for in, want := range good {
		loc, ok := parseGeoURI(in)
		if !ok || loc.Latitude != want[0] || loc.Longitude != want[1] {
			t.Errorf("parseGeoURI(%q) = %+v, %v; want %v", in, loc, ok, want)
		}
	}
	for _, in := range []string{"", "geo:", "geo:1", "geo:1,2,3,4", "geo:90.1,0", "geo:0,180.5", "geo:-91,0",
		"geo:NaN,0", "geo:Inf,0", "geo:1e1,2", "geo:0x1p-2,0", "geo:1.,2", "geo:.5,2", "geo:1,2?z=5", "geo:a,b",
		"geo:1,2;crs=mars2000", "geo:--1,2", "geo:-+1,2", "http://maps.example/?q=1,2", "geo:1;2", "geo:1,,2",
		"geo:" + strings.Repeat("9", 400) + ",0"} {
		if loc, ok := parseGeoURI(in); ok {
			t.Errorf("parseGeoURI(%q) = %+v, want it refused", in, loc)
		}
	}
}

func TestWaveformIsBounded(t *testing.T) {
	long := make([]any, 5000)
	for i := range long {
		long[i] = float64(i % 2000)
	}
	w := waveformOf(long)
	if len(w) != maxWaveform {
		t.Fatalf("%d samples, want them squeezed to %d", len(w), maxWaveform)
	}
	for _, s := range w {
		if s < 0 || s > maxSample {
			t.Fatalf("sample %d out of 0..%d", s, maxSample)
		}
	}
	if got := waveformOf([]any{1.0, "x"}); got != nil {
		t.Errorf("a waveform with a string: %v, want none", got)
	}
	in := []int{5, -1, 2000}
	if got := fitWaveform(in); !reflect.DeepEqual(got, []int{5, 0, 1024}) || in[1] != -1 {
		t.Errorf("fitWaveform: %v (input now %v), want clamped samples and the input untouched", got, in)
	}
}
