package matrix

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

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

// wireContent is content as it goes to the homeserver: mautrix's fields
// and the raw keys merged.
func wireContent(t *testing.T, content any) map[string]any {
	t.Helper()
	raw, err := json.Marshal(withKey(content, "pb.k"))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestMediaContentKinds(t *testing.T) {
	uri := id.ContentURI{Homeserver: "example.org", FileID: "f"}
	content := func(m bridge.Media, caption string) map[string]any {
		var c *event.MessageEventContent
		if caption != "" {
			c = textContent(outgoing(caption, nil), "")
		}
		return wireContent(t, &event.Content{Parsed: mediaContent(m, uri, 99, c), Raw: mediaExtras(m)})
	}
	info := func(c map[string]any) map[string]any { i, _ := c["info"].(map[string]any); return i }

	voice := content(bridge.Media{MIME: "audio/ogg; codecs=opus", Kind: bridge.MediaVoice, DurationMS: 4200, Waveform: []int{0, 700, 2000}}, "")
	audio, _ := voice["org.matrix.msc1767.audio"].(map[string]any)
	if voice["msgtype"] != "m.audio" || voice["body"] != "Voice message" || voice["org.matrix.msc3245.voice"] == nil ||
		audio["duration"] != 4200.0 || fmt.Sprint(audio["waveform"]) != "[0 700 1024]" || info(voice)["duration"] != 4200.0 {
		t.Errorf("voice note: %v", voice)
	}
	if mediaEventType(bridge.Media{Kind: bridge.MediaVoice}) != event.EventMessage {
		t.Error("a voice note is not an m.room.message")
	}
	plainAudio := content(bridge.Media{MIME: "audio/mpeg", Name: "song.mp3", DurationMS: 1000}, "")
	if plainAudio["org.matrix.msc3245.voice"] != nil || plainAudio["org.matrix.msc1767.audio"] != nil || info(plainAudio)["duration"] != 1000.0 {
		t.Errorf("plain audio: %v, want no voice keys but its length", plainAudio)
	}

	sticker := content(bridge.Media{MIME: "image/webp", Name: "party", Kind: bridge.MediaSticker, Width: 512, Height: 480}, "")
	if sticker["msgtype"] != nil || sticker["filename"] != nil || sticker["body"] != "party" || sticker["url"] != "mxc://example.org/f" ||
		info(sticker)["mimetype"] != "image/webp" || info(sticker)["w"] != 512.0 || info(sticker)["h"] != 480.0 {
		t.Errorf("sticker: %v", sticker)
	}
	if mediaEventType(bridge.Media{Kind: bridge.MediaSticker}) != event.EventSticker {
		t.Error("a sticker is not an m.sticker")
	}
	if s := content(bridge.Media{MIME: "image/webp", Kind: bridge.MediaSticker}, "<b>hi</b>"); s["format"] != nil || s["formatted_body"] != nil {
		t.Errorf("sticker with formatting: %v, want the body alone", s)
	}

	flags := []string{"fi.mau.gif", "fi.mau.loop", "fi.mau.autoplay", "fi.mau.hide_controls", "fi.mau.no_audio"}
	for mime, msgtype := range map[string]string{"video/mp4": "m.video", "image/gif": "m.image"} {
		gif := content(bridge.Media{MIME: mime, Kind: bridge.MediaGIF, Width: 320, Height: 240, DurationMS: 2500}, "lol")
		if gif["msgtype"] != msgtype || gif["body"] != "lol" || info(gif)["mimetype"] != mime || info(gif)["w"] != 320.0 || info(gif)["h"] != 240.0 || info(gif)["duration"] != 2500.0 {
			t.Errorf("%s GIF: %v, want %s with its size and length", mime, gif, msgtype)
		}
		for _, f := range flags {
			if info(gif)[f] != true {
				t.Errorf("%s GIF: info.%s is %v, want true", mime, f, info(gif)[f])
			}
		}
	}

	video := content(bridge.Media{MIME: "video/mp4", Name: "clip.mp4", Width: 1280, Height: 720, DurationMS: 9000}, "")
	if video["msgtype"] != "m.video" || info(video)["w"] != 1280.0 || info(video)["h"] != 720.0 || info(video)["duration"] != 9000.0 || info(video)["fi.mau.gif"] != nil {
		t.Errorf("video: %v", video)
	}
	odd := content(bridge.Media{MIME: "image/png", Width: -3, Height: 1 << 30, DurationMS: -1}, "")
	if info(odd)["w"] != nil || info(odd)["h"] != nil || info(odd)["duration"] != nil {
		t.Errorf("sizes out of bounds: %v, want them left out", info(odd))
	}
}

func TestLocationContent(t *testing.T) {
	at := time.UnixMilli(1714557600000)
	out := outgoing("see you there", func(o *bridge.Outgoing) {
		o.Location = &bridge.Location{Latitude: 51.5007, Longitude: -0.1246, Name: "Big Ben", Address: "London SW1A 0AA"}
		o.ReplyTo, o.Time = "$q", at
	})
	got := wireContent(t, locationContent(out, DefaultSenderFormat))
	place, _ := got["org.matrix.msc3488.location"].(map[string]any)
	asset, _ := got["org.matrix.msc3488.asset"].(map[string]any)
	rel, _ := got["m.relates_to"].(map[string]any)
	inReply, _ := rel["m.in_reply_to"].(map[string]any)
	wantBody := "Ann: 📍 Location: Big Ben\nLondon SW1A 0AA\nsee you there\ngeo:51.5007,-0.1246"
	if got["msgtype"] != "m.location" || got["geo_uri"] != "geo:51.5007,-0.1246" || got["body"] != wantBody ||
		place["uri"] != "geo:51.5007,-0.1246" || place["description"] != "Big Ben" || asset["type"] != "m.pin" ||
		got["org.matrix.msc3488.ts"] != 1714557600000.0 || inReply["event_id"] != "$q" || got[keyField] != "pb.k" {
		t.Errorf("location content %v", got)
	}
	// It reads back as the same place, with the caption.
	evt := &event.Event{Type: event.EventMessage, RoomID: inRoom, ID: "$x", Sender: "@bot:example.org"}
	raw, _ := json.Marshal(got)
	if err := json.Unmarshal(raw, &evt.Content); err != nil {
		t.Fatal(err)
	}
	back, ok := convertEvent(evt)
	if !ok || back.Location == nil || back.Location.Latitude != 51.5007 || back.Location.Longitude != -0.1246 || back.Location.Name != "Big Ben" {
		t.Errorf("read back as %+v", back)
	}

	live := outgoing("", func(o *bridge.Outgoing) {
		o.Location = &bridge.Location{Latitude: -33.8568, Longitude: 151.2153, Live: true}
	})
	got = wireContent(t, locationContent(live, ""))
	asset, _ = got["org.matrix.msc3488.asset"].(map[string]any)
	place, _ = got["org.matrix.msc3488.location"].(map[string]any)
	if got["body"] != "📍 Live location\ngeo:-33.8568,151.2153" || asset["type"] != "m.self" || place["description"] != nil || got["org.matrix.msc3488.ts"] != nil {
		t.Errorf("live location without a name: %v", got)
	}
}
