package whatsapp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"

	"github.com/phonebridge/phonebridge/bridge"
)

const (
	bobChat   = "15550002222@s.whatsapp.net"
	groupChat = "120363000000000001@g.us"
)

// sendRig is a running link to Ann's account, for sending.
type sendRig struct {
	*rig
	c    *Connector
	sink *recSink
	cl   *fakeClient
}

func newSendRig(t *testing.T, opts *Options) *sendRig {
	r := newRig(t)
	c := r.linked("me", "+15550001111", "Ann", opts)
	s, cl := r.startConnected(c)
	return &sendRig{rig: r, c: c, sink: s, cl: cl}
}

// send sends out and returns what SendMessage got for it.
func (sr *sendRig) send(t *testing.T, out *bridge.Outgoing) (string, []sentMessage, error) {
	t.Helper()
	var before int
	sr.wa.read(func() { before = len(sr.wa.sent) })
	id, err := sr.c.Send(context.Background(), out)
	var sent []sentMessage
	sr.wa.read(func() { sent = append(sent, sr.wa.sent[before:]...) })
	return id, sent, err
}

// receive delivers an incoming message through the handler and waits
// until it is remembered, as the core's commit guarantees.
func (sr *sendRig) receive(t *testing.T, chat, sender, id, text string) {
	t.Helper()
	if !sr.cl.deliver(waText(mustJID(t, chat), mustJID(t, sender), id, "Bob", text)) {
		t.Fatalf("message %s was not taken", id)
	}
	flushStore(t, sr.store)
}

// outgoing is a relayed event for chat from Bob on another platform.
func relayedOut(kind bridge.Kind, chat, key string) *bridge.Outgoing {
	return &bridge.Outgoing{
		Event: bridge.Event{Kind: kind, Chat: bridge.ChatRef{Connector: "me", ID: chat}, Sender: bridge.Sender{ID: "bob@api", Name: "Bob"}},
		Key:   key,
	}
}

// one checks that exactly one message went to chat and returns it.
func sentOne(t *testing.T, sent []sentMessage, err error, chat string) *waE2E.Message {
	t.Helper()
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(sent) != 1 {
		t.Fatalf("%d messages sent, want 1: %+v", len(sent), sent)
	}
	if sent[0].To.String() != chat {
		t.Errorf("sent to %s, want %s", sent[0].To, chat)
	}
	return sent[0].Msg
}

func TestSendText(t *testing.T) {
	sr := newSendRig(t, nil)
	custom := newSendRig(t, func() *Options { o := rigOptions(); o.SenderFormat = "[{name}] "; return o }())
	for _, tc := range []struct {
		name string
		sr   *sendRig
		mod  func(o *bridge.Outgoing)
		want string
	}{
		{"sender prefix", sr, func(o *bridge.Outgoing) { o.Text = "hi" }, "*Bob*: hi"},
		{"custom sender format", custom, func(o *bridge.Outgoing) { o.Text = "hi" }, "[Bob] hi"},
		{"sender without a name", sr, func(o *bridge.Outgoing) { o.Text = "hi"; o.Sender.Name = "" }, "*bob@api*: hi"},
		{"the owner", sr, func(o *bridge.Outgoing) { o.Text = "hi"; o.Sender.IsOwner = true }, "hi"},
		{"a notice", sr, func(o *bridge.Outgoing) { o.Text = "link 'me' was logged out"; o.Notice = true }, "link 'me' was logged out"},
		{"an emote", sr, func(o *bridge.Outgoing) { o.Text = "waves"; o.Emote = true }, "* Bob waves"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := relayedOut(bridge.KindMessage, bobChat, "pb.text."+tc.name)
			tc.mod(out)
			id, sent, err := tc.sr.send(t, out)
			msg := sentOne(t, sent, err, bobChat)
			if msg.GetConversation() != tc.want {
				t.Errorf("sent %q, want %q", msg.GetConversation(), tc.want)
			}
			if id != sent[0].ID || id != messageID(out.Key, 0) {
				t.Errorf("Send returned %q and sent with id %q, want both %q", id, sent[0].ID, messageID(out.Key, 0))
			}
		})
	}

	out := relayedOut(bridge.KindMessage, bobChat, "pb.html")
	out.Text, out.HTML = "bold move", "<b>bold</b> move"
	_, sent, err := sr.send(t, out)
	if got := sentOne(t, sent, err, bobChat).GetConversation(); !strings.HasPrefix(got, "*Bob*: ") || !strings.Contains(got, "*bold* move") {
		t.Errorf("formatted text went as %q, want the prefix and WhatsApp markup", got)
	}
}

// TestSendDeterministicIDs: the id comes from the delivery's key, so a
// retried delivery sends the same id and WhatsApp shows one message.
func TestSendDeterministicIDs(t *testing.T) {
	sr := newSendRig(t, nil)
	out := relayedOut(bridge.KindMessage, bobChat, "pb.42.0")
	out.Text = "once"
	first, sent1, err1 := sr.send(t, out)
	again, sent2, err2 := sr.send(t, out)
	sentOne(t, sent1, err1, bobChat)
	sentOne(t, sent2, err2, bobChat)
	if first != again || sent1[0].ID != sent2[0].ID {
		t.Errorf("a retry sent id %q, then %q (returned %q, %q): want the same", sent1[0].ID, sent2[0].ID, first, again)
	}
	if !strings.HasPrefix(first, whatsmeow.WebMessageIDPrefix) || len(first) != len(whatsmeow.WebMessageIDPrefix)+18 || strings.ToUpper(first) != first {
		t.Errorf("id %q is not in whatsmeow's format", first)
	}
	other := relayedOut(bridge.KindMessage, bobChat, "pb.43.0")
	other.Text = "once"
	if id, _, _ := sr.send(t, other); id == first {
		t.Errorf("another delivery got the same id %q", id)
	}
}

func TestSendReply(t *testing.T) {
	sr := newSendRig(t, nil)
	sr.receive(t, bobChat, bobChat, "BOB1", "original words")
	sr.receive(t, groupChat, "15550003333@s.whatsapp.net", "CAROL1", "in the group")

	for _, tc := range []struct {
		name, chat, replyTo, participant, quoted string
	}{
		{"direct chat", bobChat, "BOB1", bobChat, "original words"},
		{"group", groupChat, "CAROL1", "15550003333@s.whatsapp.net", "in the group"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := relayedOut(bridge.KindMessage, tc.chat, "pb.reply."+tc.name)
			out.Text, out.ReplyTo = "answer", tc.replyTo
			_, sent, err := sr.send(t, out)
			msg := sentOne(t, sent, err, tc.chat)
			ext := msg.GetExtendedTextMessage()
			ci := ext.GetContextInfo()
			if ext.GetText() != "*Bob*: answer" || ci.GetStanzaID() != tc.replyTo || ci.GetParticipant() != tc.participant ||
				ci.GetQuotedMessage().GetConversation() != tc.quoted {
				t.Errorf("sent %v, want a reply to %s by %s quoting %q", msg, tc.replyTo, tc.participant, tc.quoted)
			}
		})
	}

	// A reply to our own message names the account as its author.
	own := relayedOut(bridge.KindMessage, bobChat, "pb.own")
	own.Text = "mine"
	ownID, _, err := sr.send(t, own)
	if err != nil {
		t.Fatal(err)
	}
	flushStore(t, sr.store)
	out := relayedOut(bridge.KindMessage, bobChat, "pb.reply.own")
	out.Text, out.ReplyTo = "to myself", ownID
	_, sent, err := sr.send(t, out)
	ci := sentOne(t, sent, err, bobChat).GetExtendedTextMessage().GetContextInfo()
	if ci.GetStanzaID() != ownID || ci.GetParticipant() != annAccount.ID || ci.GetQuotedMessage().GetConversation() != "mine" {
		t.Errorf("reply to our own message has context %v", ci)
	}

	// A reply with text and a voice note (which has no caption): the text
	// goes first, alone, and carries the reply; the voice note does not.
	out = relayedOut(bridge.KindMessage, bobChat, "pb.reply.voice")
	out.Text, out.ReplyTo = "listen", "BOB1"
	out.Media = []bridge.Media{mediaOf("voice.ogg", "audio/ogg", []byte("opus"))}
	_, sent, err = sr.send(t, out)
	if err != nil || len(sent) != 2 {
		t.Fatalf("reply with a voice note: %v, %d messages sent, want 2", err, len(sent))
	}
	if ci := sent[0].Msg.GetExtendedTextMessage().GetContextInfo(); sent[0].Msg.GetExtendedTextMessage().GetText() != "*Bob*: listen" || ci.GetStanzaID() != "BOB1" {
		t.Errorf("first message %v, want the text replying to BOB1", sent[0].Msg)
	}
	if ci := sent[1].Msg.GetAudioMessage().GetContextInfo(); sent[1].Msg.GetAudioMessage() == nil || ci.GetStanzaID() != "" {
		t.Errorf("second message %v, want the voice note with no reply context", sent[1].Msg)
	}

	// A reply to a message the link does not know goes as a plain message.
	out = relayedOut(bridge.KindMessage, bobChat, "pb.reply.unknown")
	out.Text, out.ReplyTo = "what?", "NOSUCH"
	_, sent, err = sr.send(t, out)
	if msg := sentOne(t, sent, err, bobChat); msg.GetConversation() != "*Bob*: what?" {
		t.Errorf("reply to an unknown message sent %v, want plain text", msg)
	}
}

// attach is an attachment of data.
func mediaOf(name, mime string, data []byte) bridge.Media {
	return bridge.Media{Name: name, MIME: mime, Size: int64(len(data)), Open: func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}}
}

func TestSendMedia(t *testing.T) {
	sr := newSendRig(t, nil)
	type file interface {
		GetFileSHA256() []byte
		GetFileLength() uint64
		GetMimetype() string
	}
	for _, tc := range []struct {
		name, file, mime string
		mediaType        whatsmeow.MediaType
		// pick returns the attachment from the message, with its caption.
		pick    func(m *waE2E.Message) (file, string)
		caption bool // the text goes as the caption, not a message of its own
	}{
		{"photo", "photo.jpg", "image/jpeg", whatsmeow.MediaImage,
			func(m *waE2E.Message) (file, string) { return m.GetImageMessage(), m.GetImageMessage().GetCaption() }, true},
		{"video", "clip.mp4", "video/mp4", whatsmeow.MediaVideo,
			func(m *waE2E.Message) (file, string) { return m.GetVideoMessage(), m.GetVideoMessage().GetCaption() }, true},
		{"document", "report.pdf", "application/pdf", whatsmeow.MediaDocument,
			func(m *waE2E.Message) (file, string) {
				if m.GetDocumentMessage().GetFileName() != "report.pdf" {
					return nil, ""
				}
				return m.GetDocumentMessage(), m.GetDocumentMessage().GetCaption()
			}, true},
		{"gif as a document", "anim.gif", "image/gif", whatsmeow.MediaDocument,
			func(m *waE2E.Message) (file, string) {
				return m.GetDocumentMessage(), m.GetDocumentMessage().GetCaption()
			}, true},
		{"voice note", "voice.ogg", "audio/ogg", whatsmeow.MediaAudio,
			func(m *waE2E.Message) (file, string) {
				if !m.GetAudioMessage().GetPTT() {
					return nil, ""
				}
				return m.GetAudioMessage(), ""
			}, false},
		{"audio known by its name", "song.mp3", "", whatsmeow.MediaAudio,
			func(m *waE2E.Message) (file, string) { return m.GetAudioMessage(), "" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte("the bytes of " + tc.file)
			out := relayedOut(bridge.KindMessage, bobChat, "pb.media."+tc.name)
			out.Text = "look"
			out.Media = []bridge.Media{mediaOf(tc.file, tc.mime, data)}
			var uploadsBefore int
			sr.wa.read(func() { uploadsBefore = len(sr.wa.uploads) })
			id, sent, err := sr.send(t, out)
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			sr.wa.read(func() {
				ups := sr.wa.uploads[uploadsBefore:]
				if len(ups) != 1 || ups[0].Type != tc.mediaType || !bytes.Equal(ups[0].Data, data) {
					t.Errorf("uploads %+v, want the file's bytes as %q", ups, tc.mediaType)
				}
			})
			want := 1
			if !tc.caption {
				want = 2 // these carry no caption: the text goes first, alone
			}
			if len(sent) != want {
				t.Fatalf("%d messages sent, want %d: %v", len(sent), want, sent)
			}
			media := sent[len(sent)-1].Msg
			f, caption := tc.pick(media)
			if f == nil || f.GetFileLength() != uint64(len(data)) {
				t.Fatalf("sent %v, want the %s with its length", media, tc.name)
			}
			if sum := sha256.Sum256(data); !bytes.Equal(f.GetFileSHA256(), sum[:]) {
				t.Errorf("the message's hash is not the upload's")
			}
			if tc.caption && caption != "*Bob*: look" {
				t.Errorf("caption %q, want the prefixed text", caption)
			}
			if !tc.caption && sent[0].Msg.GetConversation() != "*Bob*: look" {
				t.Errorf("the text went as %v, want its own message", sent[0].Msg)
			}
			if id != sent[0].ID {
				t.Errorf("Send returned %q, want the first message's id %q", id, sent[0].ID)
			}
			for i, s := range sent {
				if s.ID != messageID(out.Key, i) {
					t.Errorf("message %d has id %q, want %q", i, s.ID, messageID(out.Key, i))
				}
			}
		})
	}

	small := newSendRig(t, func() *Options { o := rigOptions(); o.MaxMediaBytes = 8; return o }())
	for name, m := range map[string]bridge.Media{
		"over max_media_bytes": mediaOf("big.jpg", "image/jpeg", []byte("nine byte")),
		"not openable":         {Name: "gone.jpg", MIME: "image/jpeg"},
	} {
		out := relayedOut(bridge.KindMessage, bobChat, "pb.bad."+name)
		out.Media = []bridge.Media{m}
		_, sent, err := small.send(t, out)
		if !bridge.IsPermanent(err) || len(sent) != 0 {
			t.Errorf("%s: %v and %d sent, want a permanent error and nothing sent", name, err, len(sent))
		}
		small.wa.read(func() {
			if len(small.wa.uploads) != 0 {
				t.Errorf("%s: uploaded", name)
			}
		})
	}
}

// shown is how a sent message reads in the chat: "text: ...", or the
// attachment's kind with its caption ("image: ...", "audio").
func shown(m *waE2E.Message) string {
	switch {
	case m.Conversation != nil:
		return "text: " + m.GetConversation()
	case m.ExtendedTextMessage != nil:
		return "text: " + m.GetExtendedTextMessage().GetText()
	case m.ImageMessage != nil:
		return "image: " + m.GetImageMessage().GetCaption()
	case m.VideoMessage != nil:
		return "video: " + m.GetVideoMessage().GetCaption()
	case m.DocumentMessage != nil:
		return "document: " + m.GetDocumentMessage().GetCaption()
	case m.AudioMessage != nil:
		return "audio"
	}
	return fmt.Sprintf("unexpected %v", m)
}

// TestSendCaptions: each attachment's own caption goes out with it (the
// API's media[].caption), the sender named on the first message; audio,
// which WhatsApp gives no caption, is followed by its caption as a text.
func TestSendCaptions(t *testing.T) {
	sr := newSendRig(t, nil)
	sr.receive(t, bobChat, bobChat, "BOB1", "original words")
	photo := func(caption string) bridge.Media {
		m := mediaOf("photo.jpg", "image/jpeg", []byte("JPEG"))
		m.Caption = caption
		return m
	}
	voice := func(caption string) bridge.Media {
		m := mediaOf("voice.ogg", "audio/ogg", []byte("opus"))
		m.Caption = caption
		return m
	}
	doc := mediaOf("report.pdf", "application/pdf", []byte("PDF"))
	doc.Caption = "the numbers"

	for _, tc := range []struct {
		name       string
		text, html string
		media      []bridge.Media
		owner      bool
		want       []string
	}{
		{"a caption alone", "", "", []bridge.Media{photo("beach")}, false,
			[]string{"image: *Bob*: beach"}},
		{"a document's caption", "", "", []bridge.Media{doc}, false,
			[]string{"document: *Bob*: the numbers"}},
		{"text and captioned photos", "holiday", "", []bridge.Media{photo("beach"), photo("sunset")}, false,
			[]string{"text: *Bob*: holiday", "image: beach", "image: sunset"}},
		{"text on the uncaptioned first photo", "holiday", "", []bridge.Media{photo(""), photo("sunset")}, false,
			[]string{"image: *Bob*: holiday", "image: sunset"}},
		{"the caption is the text", "look", "", []bridge.Media{photo("look")}, false,
			[]string{"image: *Bob*: look"}},
		{"a photo without words", "", "", []bridge.Media{photo(""), photo("sunset")}, false,
			[]string{"image: *Bob*: ", "image: sunset"}},
		{"a voice note's caption follows it", "", "", []bridge.Media{voice("listen to this")}, false,
			[]string{"audio", "text: *Bob*: listen to this"}},
		{"text, then the voice note and its caption", "hi", "", []bridge.Media{voice("listen")}, false,
			[]string{"text: *Bob*: hi", "audio", "text: listen"}},
		{"a voice note after a photo", "", "", []bridge.Media{photo(""), voice("a song")}, false,
			[]string{"image: *Bob*: ", "audio", "text: a song"}},
		{"a voice note without words", "", "", []bridge.Media{voice("")}, false,
			[]string{"text: *Bob*: ", "audio"}},
		{"the owner's caption", "", "", []bridge.Media{photo("beach")}, true,
			[]string{"image: beach"}},
		{"the owner's voice note", "", "", []bridge.Media{voice("")}, true,
			[]string{"audio"}},
		{"formatted text as the caption", "bold move", "<b>bold</b> move", []bridge.Media{photo("")}, false,
			[]string{"image: *Bob*: *bold* move"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := relayedOut(bridge.KindMessage, bobChat, "pb.caption."+tc.name)
			out.Text, out.HTML, out.Media, out.Sender.IsOwner, out.ReplyTo = tc.text, tc.html, tc.media, tc.owner, "BOB1"
			id, sent, err := sr.send(t, out)
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			var got []string
			for i, s := range sent {
				got = append(got, shown(s.Msg))
				if s.ID != messageID(out.Key, i) {
					t.Errorf("message %d has id %q, want %q", i, s.ID, messageID(out.Key, i))
				}
			}
			if strings.Join(got, " | ") != strings.Join(tc.want, " | ") {
				t.Errorf("sent\n  %q\nwant\n  %q", got, tc.want)
			}
			if len(sent) == 0 || id != sent[0].ID {
				t.Fatalf("Send returned %q, want the first message's id", id)
			}
			// The reply context is on the first message only.
			for i, s := range sent {
				var ci *waE2E.ContextInfo
				switch m := s.Msg; {
				case m.ExtendedTextMessage != nil:
					ci = m.GetExtendedTextMessage().GetContextInfo()
				case m.ImageMessage != nil:
					ci = m.GetImageMessage().GetContextInfo()
				case m.DocumentMessage != nil:
					ci = m.GetDocumentMessage().GetContextInfo()
				case m.AudioMessage != nil:
					ci = m.GetAudioMessage().GetContextInfo()
				}
				if replies := ci.GetStanzaID() == "BOB1"; replies != (i == 0) {
					t.Errorf("message %d (%s) replies to BOB1: %v, want only the first to", i, shown(s.Msg), replies)
				}
			}
		})
	}
}

func TestSendEditDeleteReact(t *testing.T) {
	sr := newSendRig(t, nil)
	mine := relayedOut(bridge.KindMessage, bobChat, "pb.1.0")
	mine.Text = "tpyo"
	mineID, _, err := sr.send(t, mine)
	if err != nil {
		t.Fatal(err)
	}
	sr.receive(t, bobChat, bobChat, "BOB1", "from Bob")
	flushStore(t, sr.store)

	// Editing our own message.
	edit := relayedOut(bridge.KindEdit, bobChat, "pb.2.0")
	edit.Text, edit.Target = "typo", mineID
	id, sent, err := sr.send(t, edit)
	pm := sentOne(t, sent, err, bobChat).GetEditedMessage().GetMessage().GetProtocolMessage()
	if pm.GetType() != waE2E.ProtocolMessage_MESSAGE_EDIT || pm.GetKey().GetID() != mineID || !pm.GetKey().GetFromMe() ||
		pm.GetKey().GetRemoteJID() != bobChat || pm.GetEditedMessage().GetConversation() != "*Bob*: typo" {
		t.Errorf("edit sent as %v, want an edit of %s to %q", pm, mineID, "*Bob*: typo")
	}
	if id != messageID(edit.Key, 0) || sent[0].ID != id {
		t.Errorf("the edit's id %q (sent %q), want %q from its key", id, sent[0].ID, messageID(edit.Key, 0))
	}

	// Someone else's message, or one the link does not know: for good.
	for _, target := range []string{"BOB1", "NOSUCH"} {
		bad := relayedOut(bridge.KindEdit, bobChat, "pb.3."+target)
		bad.Text, bad.Target = "changed", target
		_, sent, err := sr.send(t, bad)
		if !bridge.IsPermanent(err) || len(sent) != 0 {
			t.Errorf("edit of %s: %v, %d sent; want a permanent error", target, err, len(sent))
		}
	}

	// Reactions to Bob's message, and taking one back.
	for emoji, key := range map[string]string{"👍": "pb.4.0", "": "pb.5.0"} {
		kind := bridge.KindReaction
		if emoji == "" {
			kind = bridge.KindReactionRemove
		}
		react := relayedOut(kind, bobChat, key)
		react.Target, react.Emoji = "BOB1", emoji
		_, sent, err := sr.send(t, react)
		rm := sentOne(t, sent, err, bobChat).GetReactionMessage()
		k := rm.GetKey()
		if rm == nil || rm.Text == nil || rm.GetText() != emoji || k.GetID() != "BOB1" || k.GetFromMe() || k.GetRemoteJID() != bobChat || k.Participant != nil {
			t.Errorf("%s sent as %v, want %q on Bob's BOB1", kind, rm, emoji)
		}
	}
	// In a group the key names the message's author.
	sr.receive(t, groupChat, "15550003333@s.whatsapp.net", "CAROL1", "hello group")
	react := relayedOut(bridge.KindReaction, groupChat, "pb.6.0")
	react.Target, react.Emoji = "CAROL1", "🎉"
	_, sent, err = sr.send(t, react)
	if k := sentOne(t, sent, err, groupChat).GetReactionMessage().GetKey(); k.GetParticipant() != "15550003333@s.whatsapp.net" || k.GetFromMe() {
		t.Errorf("group reaction key %v, want Carol as participant", k)
	}

	// Deleting our own message revokes it for everyone.
	del := relayedOut(bridge.KindDelete, bobChat, "pb.7.0")
	del.Target = mineID
	_, sent, err = sr.send(t, del)
	pm = sentOne(t, sent, err, bobChat).GetProtocolMessage()
	if pm.GetType() != waE2E.ProtocolMessage_REVOKE || pm.GetKey().GetID() != mineID || !pm.GetKey().GetFromMe() {
		t.Errorf("delete sent as %v, want a revoke of %s", pm, mineID)
	}
}

func TestSendTypingAndRead(t *testing.T) {
	sr := newSendRig(t, nil)
	sr.receive(t, bobChat, bobChat, "BOB1", "from Bob")

	if id, err := sr.c.Send(context.Background(), relayedOut(bridge.KindTyping, bobChat, "")); err != nil || id != "" {
		t.Fatalf("typing: %q, %v", id, err)
	}
	read := relayedOut(bridge.KindRead, bobChat, "")
	read.Target = "BOB1"
	if _, err := sr.c.Send(context.Background(), read); err != nil {
		t.Fatalf("read: %v", err)
	}
	unknown := relayedOut(bridge.KindRead, bobChat, "")
	unknown.Target = "NOSUCH"
	if _, err := sr.c.Send(context.Background(), unknown); err != nil {
		t.Errorf("read of an unknown message: %v, want it dropped quietly", err)
	}
	sr.wa.read(func() {
		want := presenceCall{Chat: mustJID(t, bobChat), State: types.ChatPresenceComposing, Media: types.ChatPresenceMediaText}
		if len(sr.wa.presences) != 1 || sr.wa.presences[0] != want {
			t.Errorf("presences %+v, want %+v", sr.wa.presences, want)
		}
		if len(sr.wa.reads) != 1 || len(sr.wa.reads[0].IDs) != 1 || sr.wa.reads[0].IDs[0] != "BOB1" ||
			sr.wa.reads[0].Chat.String() != bobChat || sr.wa.reads[0].Sender.String() != bobChat {
			t.Errorf("MarkRead calls %+v, want BOB1 in Bob's chat from Bob", sr.wa.reads)
		}
		if len(sr.wa.sent) != 0 {
			t.Errorf("typing and read sent messages: %+v", sr.wa.sent)
		}
	})
}

func TestSendErrors(t *testing.T) {
	sr := newSendRig(t, nil)
	text := func(chat string) *bridge.Outgoing {
		o := relayedOut(bridge.KindMessage, chat, "pb.err."+chat)
		o.Text = "hi"
		return o
	}
	for _, chat := range []string{"general", "", "@s.whatsapp.net"} {
		if _, err := sr.c.Send(context.Background(), text(chat)); !bridge.IsPermanent(err) {
			t.Errorf("chat %q: %v, want a permanent error", chat, err)
		}
	}
	empty := relayedOut(bridge.KindMessage, bobChat, "pb.empty")
	if _, err := sr.c.Send(context.Background(), empty); !bridge.IsPermanent(err) {
		t.Errorf("a message with nothing in it: %v, want a permanent error", err)
	}

	sr.wa.update(func() { sr.wa.sendErr = whatsmeow.ErrNotInGroup })
	if _, err := sr.c.Send(context.Background(), text(groupChat)); !bridge.IsPermanent(err) || !errors.Is(err, whatsmeow.ErrNotInGroup) {
		t.Errorf("not in the group: %v, want a permanent error", err)
	}
	sr.wa.update(func() { sr.wa.sendErr = errors.New("websocket: close 1006") })
	if _, err := sr.c.Send(context.Background(), text(bobChat)); err == nil || bridge.IsPermanent(err) {
		t.Errorf("a dropped socket: %v, want a transient error", err)
	}
	sr.wa.update(func() { sr.wa.sendErr = nil })
	sr.cl.drop()
	if _, err := sr.c.Send(context.Background(), text(bobChat)); err == nil || bridge.IsPermanent(err) {
		t.Errorf("disconnected: %v, want a transient error", err)
	}

	// A link that is not running: the event waits, except a bad chat id.
	idle := sr.linked("other", "+15550009999", "Zed", nil)
	if _, err := idle.Send(context.Background(), text(bobChat)); err == nil || bridge.IsPermanent(err) || !strings.Contains(err.Error(), "not connected") {
		t.Errorf("not started: %v, want a transient error saying it is not connected", err)
	}
	if _, err := idle.Send(context.Background(), text("general")); !bridge.IsPermanent(err) {
		t.Errorf("not started, bad chat id: %v, want a permanent error", err)
	}
}

// TestOpenMedia downloads an attachment of a WhatsApp message again, from
// the reference its event carries.
func TestOpenMedia(t *testing.T) {
	sr := newSendRig(t, nil)
	photo := waText(mustJID(t, bobChat), mustJID(t, bobChat), "IMG1", "Bob", "")
	photo.Message = &waE2E.Message{ImageMessage: &waE2E.ImageMessage{
		DirectPath: proto.String("/v/t62/photo"), MediaKey: []byte("key"), Mimetype: proto.String("image/jpeg"),
		FileLength: proto.Uint64(5), Caption: proto.String("a photo"),
	}}
	sr.wa.update(func() { sr.wa.downloads["/v/t62/photo"] = []byte("JPEG!") })
	if !sr.cl.deliver(photo) {
		t.Fatal("the photo was not taken")
	}
	evs := sr.sink.eventList()
	if len(evs) != 1 || len(evs[0].Media) != 1 {
		t.Fatalf("relayed %+v, want the photo", evs)
	}
	m := evs[0].Media[0]
	rc, err := sr.c.OpenMedia(context.Background(), m)
	if err != nil {
		t.Fatalf("OpenMedia: %v", err)
	}
	data, _ := io.ReadAll(rc)
	rc.Close()
	if string(data) != "JPEG!" {
		t.Errorf("OpenMedia read %q, want the photo's bytes", data)
	}

	sr.wa.update(func() { delete(sr.wa.downloads, "/v/t62/photo") })
	if _, err := sr.c.OpenMedia(context.Background(), m); !bridge.IsPermanent(err) {
		t.Errorf("an attachment WhatsApp no longer has: %v, want a permanent error", err)
	}
	m.Ref = "{not json"
	if _, err := sr.c.OpenMedia(context.Background(), m); !bridge.IsPermanent(err) {
		t.Errorf("a damaged reference: %v, want a permanent error", err)
	}
}
