package matrix

import (
	"encoding/json"
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
	`{"type":"m.room.message","content":null}`, `{"type":"m.room.encrypted","content":{"algorithm":"m.megolm.v1.aes-sha2"}}`,
	`{"type":"m.reaction","content":{"m.relates_to":"nope"}}`, `{}`, `[]`, `null`,
}

// FuzzConvertEvent decodes arbitrary JSON as an event of a transaction,
// as the appservice's transaction handler does (prepareTxnEvent), and
// converts it. It must never panic; an event it relays has a kind, the
// text or target its kind needs, and HTML in the core's subset only.
func FuzzConvertEvent(f *testing.F) {
	for _, s := range eventSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var evt event.Event
		if json.Unmarshal(data, &evt) != nil {
			return
		}
		prepareTxnEvent(&evt)
		checkConverted(t, &evt)
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
	switch ev.Kind {
	case bridge.KindMessage:
		if ev.Text == "" && len(ev.Media) == 0 {
			t.Fatalf("a message with neither text nor media: %+v", ev)
		}
		for _, m := range ev.Media {
			if m.Ref == "" || m.MIME == "" {
				t.Fatalf("media without a ref or a type: %+v", m)
			}
		}
	case bridge.KindEdit:
		if ev.Target == "" || ev.Text == "" {
			t.Fatalf("an edit without target or text: %+v", ev)
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
