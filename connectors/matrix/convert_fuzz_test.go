package matrix

import (
	"cmp"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/net/html"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
)

// checkSubset fails t unless h uses only the core's HTML subset: its tags
// without attributes, but for a's href to a safe scheme.
func checkSubset(t *testing.T, h string) {
	t.Helper()
	z := html.NewTokenizer(strings.NewReader(h))
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			return
		case html.TextToken:
			continue
		case html.StartTagToken, html.EndTagToken, html.SelfClosingTagToken:
		default:
			t.Fatalf("token %v in %q", tt, h)
		}
		tok := z.Token()
		if htmlTags[tok.Data] != tok.Data {
			t.Fatalf("tag <%s> in %q", tok.Data, h)
		}
		for _, a := range tok.Attr {
			if tok.Data != "a" || a.Key != "href" || a.Namespace != "" || !safeLink(a.Val) {
				t.Fatalf("attribute %s=%q on <%s> in %q", a.Key, a.Val, tok.Data, h)
			}
		}
	}
}

// htmlSeeds are formatted bodies as Matrix clients write them, and markup
// no client should.
var htmlSeeds = []string{
	"<strong>hi</strong> <font color=\"red\">there</font>",
	`<mx-reply><blockquote><a href="https://matrix.to/#/!r:x/$o">In reply to</a><br>original</blockquote></mx-reply>the <em>answer</em>`,
	`<h1>Title</h1><p>para<br/>line</p><ul><li>one</li><li>two</li></ul><ol start="3"><li>x</li></ol>`,
	`<pre><code class="language-go">x := 1</code></pre><img alt=":cat:" src="mxc://x/y"><del>gone</del>`,
	`<a href="javascript:alert(1)">js</a><a href=" HTTPS://ok.example">ok</a><a href="mailto:a@b">m</a><a>bare</a>`,
	`<script>alert(1)</script><style>p{}</style><table><tr><td>cell</td></tr></table><div>block</div>`,
	`<b onclick="x()" style="color:red">attrs</b><svg><a href="https://x">svg link</a></svg><math><mi>x</mi></math>`,
	"<b><i>unclosed", "</b></i>", "&lt;&amp;&#0;&nbsp;", "<!-- c --><![CDATA[x]]><?pi?>", "\x00<b>\xff</b>",
	strings.Repeat("<b>", 500) + "deep" + strings.Repeat("</b>", 500),
	strings.Repeat("<p><i>", 200) + "x", strings.Repeat("<i><i><i><p>", 100) + "x",
}

// FuzzNormalizeHTML feeds arbitrary HTML, as any Matrix user can send it,
// to the filter into the core's subset. It must never panic; what it keeps
// must be the subset only, at most a bounded factor longer; and valid
// UTF-8 stays valid.
func FuzzNormalizeHTML(f *testing.F) {
	for _, s := range htmlSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := normalizeHTML(s)
		checkSubset(t, out)
		// The parser reopens formatting across blocks; that must not
		// multiply a message without bound.
		if max := 16*len(s) + 64; len(out) > max {
			t.Fatalf("%d bytes of HTML became %d: %q", len(s), len(out), s)
		}
		if utf8.ValidString(s) && !utf8.ValidString(out) {
			t.Fatalf("valid UTF-8 %q became invalid %q", s, out)
		}
	})
}

// eventSeeds are events as a homeserver delivers them in a transaction.
var eventSeeds = []string{
	`{"type":"org.matrix.msc3381.poll.response","event_id":"$v","room_id":"!r:x","sender":"@ann:x","content":{"m.relates_to":{"rel_type":"m.reference","event_id":"$p"},"org.matrix.msc3381.poll.response":{"answers":["2","2","x"]}}}`,
	`{"type":"m.room.message","event_id":"$lm","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":"m.location","body":"* here","geo_uri":"geo:1,2","m.new_content":{"msgtype":"m.location","body":"here","geo_uri":"geo:1.5,2.5","org.matrix.msc3488.location":{"uri":"geo:1.5,2.5"}},"m.relates_to":{"rel_type":"m.replace","event_id":"$l"}}}`,
	`{"type":"org.matrix.msc3381.poll.start","event_id":"$p","room_id":"!r:x","sender":"@ann:x","content":{"org.matrix.msc3381.poll.start":{"kind":"org.matrix.msc3381.poll.disclosed","max_selections":1,"question":{"org.matrix.msc1767.text":"Lunch?"},"answers":[{"id":"1","org.matrix.msc1767.text":"Pizza"},{"id":"2","org.matrix.msc1767.text":"Sushi"}]},"org.matrix.msc1767.text":"Lunch?\n1. Pizza\n2. Sushi"}}`,
	`{"type":"m.room.message","event_id":"$m","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":"m.text","body":"Bob: hi","format":"org.matrix.custom.html","formatted_body":"<a href=\"https://matrix.to/#/@wa_bob:x\">Bob</a>: hi"}}`,
	`{"type":"m.room.message","event_id":"$t","room_id":"!r:x","sender":"@ann:x","origin_server_ts":1,"content":{"msgtype":"m.text","body":"hello"}}`,
	`{"type":"m.room.message","event_id":"$f","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":"m.text","body":"hi","format":"org.matrix.custom.html","formatted_body":"<b>hi</b><script>x</script>"}}`,
	`{"type":"m.room.message","event_id":"$r","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":"m.notice","body":"> <@b:x> q\n\nanswer","format":"org.matrix.custom.html","formatted_body":"<mx-reply>q</mx-reply>answer","m.relates_to":{"m.in_reply_to":{"event_id":"$o"}}}}`,
	`{"type":"m.room.message","event_id":"$e","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":"m.text","body":"* fixed","m.new_content":{"msgtype":"m.text","body":"fixed","format":"org.matrix.custom.html","formatted_body":"<i>fixed</i>"},"m.relates_to":{"rel_type":"m.replace","event_id":"$t"}}}`,
	`{"type":"m.room.message","event_id":"$e2","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":"m.emote","body":"* waves","m.relates_to":{"rel_type":"m.replace","event_id":"$t"}}}`,
	`{"type":"m.room.message","event_id":"$i","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":"m.image","body":"cap","filename":"cat.jpg","url":"mxc://x/y","info":{"mimetype":"image/jpeg","size":12},"format":"org.matrix.custom.html","formatted_body":"<b>cap</b>"}}`,
	`{"type":"m.room.message","event_id":"$v","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":"m.video","body":"v.mp4","file":{"url":"mxc://x/enc"}}}`,
	`{"type":"m.room.message","event_id":"$l","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":"m.location","body":"here","geo_uri":"geo:1,2"}}`,
	`{"type":"m.sticker","event_id":"$s","room_id":"!r:x","sender":"@ann:x","content":{"body":"sticker","url":"mxc://x/s","info":{"size":-1}}}`,
	`{"type":"m.reaction","event_id":"$re","room_id":"!r:x","sender":"@ann:x","content":{"m.relates_to":{"rel_type":"m.annotation","event_id":"$t","key":"👍"}}}`,
	`{"type":"m.room.redaction","event_id":"$d","room_id":"!r:x","sender":"@ann:x","redacts":"$t","content":{}}`,
	`{"type":"m.room.redaction","event_id":"$d2","room_id":"!r:x","sender":"@ann:x","content":{"redacts":"$t"}}`,
	`{"type":"m.room.member","state_key":"@ann:x","event_id":"$m","room_id":"!r:x","sender":"@ann:x","content":{"membership":"join","displayname":"Ann"}}`,
	`{"type":"m.room.message","event_id":"$x","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":5,"body":[1]}}`,
	// Voice notes, stickers, GIFs, sizes and places, well and badly formed.
	`{"type":"m.room.message","event_id":"$vo","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":"m.audio","body":"Voice message","url":"mxc://x/v","info":{"mimetype":"audio/ogg","duration":4321},"org.matrix.msc1767.audio":{"duration":4321,"waveform":[0,12,1024,512]},"org.matrix.msc3245.voice":{}}}`,
	`{"type":"m.room.message","event_id":"$vo2","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":"m.audio","body":"v","url":"mxc://x/v","info":{"duration":1e300},"org.matrix.msc1767.audio":{"duration":-1,"waveform":[1.5,-7,1e309,"x",null]},"org.matrix.msc3245.voice":7}}`,
	`{"type":"m.room.message","event_id":"$vo3","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":"m.audio","body":"v","url":"mxc://x/v","org.matrix.msc1767.audio":"loud","org.matrix.msc2516.voice":{}}}`,
	`{"type":"m.sticker","event_id":"$s2","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":"m.location","body":"s","url":"mxc://x/s","geo_uri":"geo:1,2","info":{"mimetype":"image/png","w":512,"h":512.7}}}`,
	`{"type":"m.sticker","event_id":"$s3","room_id":"!r:x","sender":"@ann:x","content":{"body":"s","url":"mxc://x/s","info":{"w":-5,"h":1e300,"size":"big"}}}`,
	`{"type":"m.room.message","event_id":"$g","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":"m.video","body":"g","url":"mxc://x/g","info":{"mimetype":"video/mp4","w":320,"h":240,"duration":2000,"fi.mau.gif":true,"fi.mau.loop":true,"fi.mau.autoplay":true}}}`,
	`{"type":"m.room.message","event_id":"$g2","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":"m.image","body":"a.gif","url":"mxc://x/g","info":{"mimetype":"IMAGE/GIF","fi.mau.gif":"yes"}}}`,
	`{"type":"m.room.message","event_id":"$l2","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":"m.location","body":"User Location \"Home\" geo:51.5,-0.1;u=10 at 2024-05-01T10:00:00.000Z","geo_uri":"geo:51.5,-0.1;u=10","org.matrix.msc3488.location":{"uri":"geo:51.5,-0.1;u=10","description":"Home"},"org.matrix.msc3488.asset":{"type":"m.self"}}}`,
	`{"type":"m.room.message","event_id":"$l3","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":"m.location","body":"","geo_uri":"geo:91,181","org.matrix.msc3488.location":{"uri":"geo:-90,-180,5;crs=wgs84","description":7}}}`,
	`{"type":"m.room.message","event_id":"$l4","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":"m.location","body":"x","geo_uri":"geo:NaN,Inf","org.matrix.msc3488.location":"here"}}`,
	`{"type":"m.room.message","event_id":"$l5","room_id":"!r:x","sender":"@ann:x","content":{"msgtype":"m.location","body":"geo:1,2 geo:1,2;u=3","geo_uri":"geo:1,2","m.relates_to":{"m.in_reply_to":{"event_id":"$o"}}}}`,
	`{"type":"m.room.message","content":null}`, `{"type":"m.room.encrypted","content":{"algorithm":"m.megolm.v1.aes-sha2"}}`,
	`{"type":"m.reaction","content":{"m.relates_to":"nope"}}`, `{}`, `[]`, `null`,
}

// FuzzConvertEvent decodes arbitrary JSON as an event of a transaction,
// as the appservice's transaction handler does (prepareTxnEvent), and as
// bot mode's /sync does (parsed on conversion), and converts it. It must
// never panic; an event it relays passes the core's Check, has the text
// or target its kind needs, media of a known kind with bounded sizes and
// waveform, a place only from an m.location and only on Earth, and HTML
// in the core's subset only.
func FuzzConvertEvent(f *testing.F) {
	for _, s := range eventSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var evt event.Event
		if json.Unmarshal(data, &evt) != nil {
			return
		}
		sync := evt
		sync.Content = event.Content{VeryRaw: evt.Content.VeryRaw, Raw: evt.Content.Raw}
		prepareTxnEvent(&evt)
		checkConverted(t, &evt)
		if sync.StateKey == nil {
			sync.Type.Class = event.MessageEventType
		}
		checkConverted(t, &sync)
	})
}

// checkConverted converts evt and checks what comes out.
func checkConverted(t *testing.T, evt *event.Event) {
	t.Helper()
	ev, ok := convertEvent(evt)
	if !ok {
		return
	}
	if ev.Chat.ID != string(evt.RoomID) || ev.ID != string(evt.ID) || ev.Sender.ID != string(evt.Sender) {
		t.Fatalf("event %s/%s/%s became %+v", evt.RoomID, evt.ID, evt.Sender, ev)
	}
	// The callers name the chat (a portal's origin chat) before the
	// core's Check; a transaction may lack the room.
	checked := *ev
	checked.Chat.ID = cmp.Or(checked.Chat.ID, "!r:x")
	if ev.Kind == bridge.KindVote {
		// The choices come from the poll, read by the caller (readVote).
		if ev.Target == "" || ev.Vote != nil {
			t.Fatalf("a poll response became %+v", ev)
		}
		checked.Vote = &bridge.Vote{}
	}
	if err := checked.Check(); err != nil {
		t.Fatalf("the core would refuse %+v: %v", ev, err)
	}
	if l := ev.Location; l != nil && ev.Kind == bridge.KindMessage {
		msgtype := parsedMsgType(evt)
		if evt.Type != event.EventMessage || msgtype != event.MsgLocation || !l.Valid() || math.IsNaN(l.Latitude) || math.IsNaN(l.Longitude) || len(ev.Media) > 0 {
			t.Fatalf("a place %+v from a %s %q event with media %v", l, evt.Type.Type, msgtype, ev.Media)
		}
	}
	switch ev.Kind {
	case bridge.KindMessage:
		if ev.Text == "" && len(ev.Media) == 0 && ev.Location == nil && ev.Poll == nil {
			t.Fatalf("a message with neither text, media, a place nor a poll: %+v", ev)
		}
		for _, m := range ev.Media {
			if m.Ref == "" || m.MIME == "" {
				t.Fatalf("media without a ref or a type: %+v", m)
			}
			checkMediaKind(t, evt, m)
		}
	case bridge.KindEdit:
		if ev.Target == "" || (ev.Text == "" && ev.Location == nil) {
			t.Fatalf("an edit without target, text or place: %+v", ev)
		}
		if l := ev.Location; l != nil && (!l.Valid() || math.IsNaN(l.Latitude) || math.IsNaN(l.Longitude) || !l.Live) {
			t.Fatalf("a live location moved to %+v", l)
		}
	case bridge.KindVote:
		if evt.Type != event.EventUnstablePollResponse {
			t.Fatalf("a vote from a %s event", evt.Type.Type)
		}
	case bridge.KindReaction:
		if ev.Target == "" || ev.Emoji == "" {
			t.Fatalf("a reaction without target or emoji: %+v", ev)
		}
	case bridge.KindDelete:
		if ev.Target == "" {
			t.Fatalf("a delete without target: %+v", ev)
		}
	default:
		t.Fatalf("kind %q from a %s event", ev.Kind, evt.Type.Type)
	}
	checkSubset(t, ev.HTML)
}

// checkMediaKind fails t unless m's kind fits the event it came from and
// its numbers are within bounds.
func checkMediaKind(t *testing.T, evt *event.Event, m bridge.Media) {
	t.Helper()
	msgtype := parsedMsgType(evt)
	switch m.Kind {
	case bridge.MediaPlain:
	case bridge.MediaSticker:
		if evt.Type != event.EventSticker {
			t.Fatalf("a sticker from a %s event", evt.Type.Type)
		}
	case bridge.MediaVoice:
		if evt.Type != event.EventMessage || msgtype != event.MsgAudio {
			t.Fatalf("a voice note from a %s %q event", evt.Type.Type, msgtype)
		}
	case bridge.MediaGIF:
		if evt.Type != event.EventMessage || msgtype != event.MsgVideo && msgtype != event.MsgImage {
			t.Fatalf("a GIF from a %s %q event", evt.Type.Type, msgtype)
		}
	default:
		t.Fatalf("media of kind %q", m.Kind)
	}
	if m.Kind != bridge.MediaVoice && m.Waveform != nil {
		t.Fatalf("a waveform on %s media", m.Kind)
	}
	if m.Size < 0 || m.Width < 0 || m.Width > maxPixels || m.Height < 0 || m.Height > maxPixels || m.DurationMS < 0 || m.DurationMS > maxDurationMS {
		t.Fatalf("media numbers out of bounds: %+v", m)
	}
	if len(m.Waveform) > maxWaveform {
		t.Fatalf("a waveform of %d samples", len(m.Waveform))
	}
	for _, s := range m.Waveform {
		if s < 0 || s > maxSample {
			t.Fatalf("a waveform sample %d", s)
		}
	}
}

// parsedMsgType is the msgtype evt was converted with (JSON field names
// match in any case, as encoding/json has them).
func parsedMsgType(evt *event.Event) event.MessageType {
	if msg, ok := evt.Content.Parsed.(*event.MessageEventContent); ok {
		return msg.MsgType
	}
	return ""
}

// FuzzTextContent builds the m.room.message for an outgoing message from
// arbitrary text, HTML (the API takes any from its clients) and sender
// names, as a message, an edit and a media caption. It must never panic;
// formatted bodies use the subset only (the sender_format is the
// operator's and trusted); and every content, as JSON, fits the event
// size limit, however its text escapes.
func FuzzTextContent(f *testing.F) {
	f.Add("hello", "", "Ann", uint8(0), uint16(0))
	f.Add("hi *you*", "hi <i>you</i>", "<script>\"Eve\"", uint8(1), uint16(0))
	f.Add("", "<img src=x onerror=alert(1)><b>bold</b> <a href=\"javascript:x\">js</a>", "Ann", uint8(2), uint16(0))
	f.Add("waves", "", "Bob", uint8(4), uint16(0))
	f.Add("Ann reacted 👍", "", "Ann", uint8(8), uint16(0))
	f.Add("\x01", "", "Ann", uint8(1), uint16(maxTextRunes))
	f.Add("<", "<b>&lt;</b>", "Ann", uint8(17), uint16(maxTextRunes))
	f.Add("𝄞", "", "Ann", uint8(21), uint16(maxTextRunes))
	formats := []string{"", DefaultSenderFormat, "{name}: ", "<i>{name}</i> — "}
	f.Fuzz(func(t *testing.T, text, htmlBody, name string, flags uint8, repeat uint16) {
		// repeat stretches the text towards the core's longest part, so
		// that a short input explores the size limit too.
		if n := utf8.RuneCountInString(text); n > 0 && repeat > 1 {
			text = strings.Repeat(text, min(int(repeat), maxTextRunes/n))
		}
		out := &bridge.Outgoing{Key: "pb.k", Event: bridge.Event{Target: "$target",
			Kind: bridge.KindMessage, Text: text, HTML: htmlBody,
			Sender: bridge.Sender{ID: "u1", Name: name},
			Emote:  flags&4 != 0, Notice: flags&8 != 0,
			Origin: bridge.ChatRef{Connector: "api", ID: "general"},
		}}
		format := formats[int(flags)%len(formats)]
		if len(name) > 200 {
			return // names are short; a long one is the template's business
		}
		if htmlBody == "" && text == "" {
			return // refused before it is built
		}
		content := textContent(out, format)
		fitContent(content)
		checkContent(t, content)

		edit := editContent(out, format)
		checkContent(t, edit)
		if edit.NewContent == nil {
			t.Fatal("an edit without m.new_content")
		}

		caption := mediaContent(bridge.Media{MIME: "image/png", Name: "a.png"}, id.ContentURI{Homeserver: "x", FileID: "y"}, 1, textContent(out, format))
		fitContent(caption)
		checkContent(t, caption)
	})
}

func checkContent(t *testing.T, c *event.MessageEventContent) {
	t.Helper()
	for _, h := range []*event.MessageEventContent{c, c.NewContent} {
		if h == nil {
			continue
		}
		// The templates tried use the subset too.
		checkSubset(t, h.FormattedBody)
	}
	if n := contentSize(c); n > maxContentBytes {
		t.Fatalf("content of %d bytes as JSON (body %d, HTML %d bytes)", n, len(c.Body), len(c.FormattedBody))
	}
}
