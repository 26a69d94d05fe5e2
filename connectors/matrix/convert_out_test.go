package matrix

import (
	"encoding/json"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
)

func outgoing(text string, f func(*bridge.Outgoing)) *bridge.Outgoing {
	out := &bridge.Outgoing{Event: bridge.Event{Kind: bridge.KindMessage, Text: text,
		Sender: bridge.Sender{ID: "u1", Name: "Ann"}, Origin: bridge.ChatRef{Connector: "api", ID: "general"}}, Key: "pb.k"}
	if f != nil {
		f(out)
	}
	return out
}

func TestSenderPrefixEscapesTheName(t *testing.T) {
	plain, h := senderPrefix(DefaultSenderFormat, `<script>"Eve" & co`)
	if h != "<b>&lt;script&gt;&#34;Eve&#34; &amp; co</b>: " {
		t.Errorf("HTML prefix %q: the name must be escaped", h)
	}
	if plain != `<script>"Eve" & co: ` {
		t.Errorf("plain prefix %q, want the name as written and the separating space", plain)
	}
	plain, h = senderPrefix("[{name}] ", "Bob")
	if plain != "[Bob] " || h != "[Bob] " {
		t.Errorf("template without markup: %q / %q", plain, h)
	}
}

func TestTextContent(t *testing.T) {
	tests := []struct {
		name          string
		out           *bridge.Outgoing
		format        string
		msgType       event.MessageType
		body, html    string
		wantNoPrefix  bool
		wantNoHTMLTag bool
	}{
		{name: "plain text, bot mode", out: outgoing("hello", nil), format: DefaultSenderFormat,
			msgType: event.MsgText, body: "Ann: hello", html: "<b>Ann</b>: hello"},
		{name: "text with HTML", out: outgoing("hi *you*", func(o *bridge.Outgoing) { o.HTML = "hi <i>you</i>" }), format: DefaultSenderFormat,
			msgType: event.MsgText, body: "Ann: hi *you*", html: "<b>Ann</b>: hi <i>you</i>"},
		{name: "HTML only", out: outgoing("", func(o *bridge.Outgoing) { o.HTML = "<b>bold</b> move" }), format: DefaultSenderFormat,
			msgType: event.MsgText, body: "Ann: bold move", html: "<b>Ann</b>: <b>bold</b> move"},
		{name: "text needing escapes", out: outgoing("a < b\nc", nil), format: DefaultSenderFormat,
			msgType: event.MsgText, body: "Ann: a < b\nc", html: "<b>Ann</b>: a &lt; b<br/>c"},
		{name: "template without markup", out: outgoing("hello", nil), format: "{name}: ",
			msgType: event.MsgText, body: "Ann: hello"},
		{name: "no sender format (appservice ghosts)", out: outgoing("hello", func(o *bridge.Outgoing) { o.HTML = "<b>hello</b>" }),
			msgType: event.MsgText, body: "hello", html: "<b>hello</b>"},
		{name: "emote", out: outgoing("waves", func(o *bridge.Outgoing) { o.Emote = true }), format: DefaultSenderFormat,
			msgType: event.MsgEmote, body: "Ann waves"},
		{name: "notice from a platform", out: outgoing("build passed", func(o *bridge.Outgoing) { o.Notice = true }), format: DefaultSenderFormat,
			msgType: event.MsgNotice, body: "Ann: build passed", html: "<b>Ann</b>: build passed"},
		{name: "the core's reaction notice", out: outgoing("Ann reacted 👍 to “hi”", func(o *bridge.Outgoing) { o.Notice = true }), format: DefaultSenderFormat,
			msgType: event.MsgNotice, body: "Ann reacted 👍 to “hi”"},
		{name: "the bridge's own notice", out: outgoing("link 'me' was logged out", func(o *bridge.Outgoing) {
			o.Notice, o.Origin, o.Sender = true, bridge.ChatRef{Connector: bridge.NoticeOrigin, ID: "notices"}, bridge.Sender{ID: "phonebridge", Name: "phonebridge"}
		}), format: DefaultSenderFormat, msgType: event.MsgNotice, body: "link 'me' was logged out"},
		{name: "nameless sender", out: outgoing("hi", func(o *bridge.Outgoing) { o.Sender = bridge.Sender{ID: "+1555"} }), format: DefaultSenderFormat,
			msgType: event.MsgText, body: "+1555: hi", html: "<b>+1555</b>: hi"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := textContent(tc.out, tc.format)
			if c.MsgType != tc.msgType || c.Body != tc.body || c.FormattedBody != tc.html {
				t.Errorf("got %s %q / %q, want %s %q / %q", c.MsgType, c.Body, c.FormattedBody, tc.msgType, tc.body, tc.html)
			}
			if (c.FormattedBody != "") != (c.Format == event.FormatHTML) {
				t.Errorf("format %q with formatted body %q", c.Format, c.FormattedBody)
			}
		})
	}
}

func TestEditContent(t *testing.T) {
	out := outgoing("fixed", func(o *bridge.Outgoing) { o.Kind, o.Target, o.HTML = bridge.KindEdit, "$orig", "<i>fixed</i>" })
	c := editContent(out, DefaultSenderFormat)
	if c.RelatesTo.GetReplaceID() != "$orig" {
		t.Errorf("relates to %+v, want m.replace of $orig", c.RelatesTo)
	}
	if c.NewContent == nil || c.NewContent.Body != "Ann: fixed" || c.NewContent.FormattedBody != "<b>Ann</b>: <i>fixed</i>" {
		t.Errorf("m.new_content %+v, want the whole new message with the sender", c.NewContent)
	}
	if c.Body != "* Ann: fixed" || c.FormattedBody != "* <b>Ann</b>: <i>fixed</i>" {
		t.Errorf("fallback %q / %q, want it marked with '* '", c.Body, c.FormattedBody)
	}
}

func TestReplyAndReactionContent(t *testing.T) {
	c := textContent(outgoing("yes", nil), "")
	withReply(c, "$q")
	raw, _ := json.Marshal(withKey(c, "pb.7"))
	var got map[string]any
	json.Unmarshal(raw, &got)
	rel, _ := got["m.relates_to"].(map[string]any)
	inReply, _ := rel["m.in_reply_to"].(map[string]any)
	if inReply["event_id"] != "$q" || rel["rel_type"] != nil {
		t.Errorf("m.relates_to = %v, want only m.in_reply_to $q", got["m.relates_to"])
	}
	if got[keyField] != "pb.7" || got["body"] != "yes" {
		t.Errorf("content %s, want the body and the delivery key", raw)
	}

	raw, _ = json.Marshal(withKey(reactionContent("$m", "🎉"), "pb.8"))
	if s := string(raw); !strings.Contains(s, `"rel_type":"m.annotation"`) || !strings.Contains(s, `"event_id":"$m"`) || !strings.Contains(s, `"key":"🎉"`) {
		t.Errorf("reaction content %s, want an m.annotation of $m with 🎉", s)
	}
}

func TestMediaContent(t *testing.T) {
	uri := id.ContentURI{Homeserver: "example.org", FileID: "f"}
	for mime, want := range map[string]event.MessageType{
		"image/png": event.MsgImage, "video/mp4": event.MsgVideo, "audio/ogg": event.MsgAudio,
		"application/pdf": event.MsgFile, "": event.MsgFile,
	} {
		if got := mediaMsgType(mime); got != want {
			t.Errorf("%q: msgtype %s, want %s", mime, got, want)
		}
	}
	caption := textContent(outgoing("look", nil), DefaultSenderFormat)
	c := mediaContent(bridge.Media{MIME: "image/png", Name: "cat.png"}, uri, 42, caption)
	if c.MsgType != event.MsgImage || c.URL != "mxc://example.org/f" || c.FileName != "cat.png" || c.Info.Size != 42 || c.Info.MimeType != "image/png" {
		t.Errorf("media content %+v", c)
	}
	if c.Body != "Ann: look" || c.FormattedBody != "<b>Ann</b>: look" {
		t.Errorf("caption %q / %q, want the text with the sender", c.Body, c.FormattedBody)
	}
	if c.GetCaption() != "Ann: look" {
		t.Errorf("Matrix clients would not show %q as a caption", c.Body)
	}
	bare := mediaContent(bridge.Media{MIME: "application/pdf", Name: "r.pdf"}, uri, 1, nil)
	if bare.Body != "r.pdf" || bare.GetCaption() != "" {
		t.Errorf("no caption: body %q, want the file name", bare.Body)
	}
}

func TestFitContentDropsHTMLFirst(t *testing.T) {
	long := strings.Repeat("x", maxContentBytes/2+10)
	c := textContent(outgoing(long, func(o *bridge.Outgoing) { o.HTML = "<b>" + long + "</b>" }), "")
	fitContent(c)
	if c.FormattedBody != "" || c.Format != "" || c.Body != long {
		t.Errorf("an over-long message keeps its HTML (%d bytes) or loses its text", len(c.FormattedBody))
	}
	short := textContent(outgoing("hi", func(o *bridge.Outgoing) { o.HTML = "<b>hi</b>" }), "")
	fitContent(short)
	if short.FormattedBody != "<b>hi</b>" {
		t.Error("a short message lost its HTML")
	}
}
