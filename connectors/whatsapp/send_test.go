package whatsapp

// Sending to WhatsApp on the wire: the connector drives the real whatsmeow
// client against internal/fakewa, and the tests read what the phones
// decrypt (and, for attachments, download and decrypt).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// bobChat is Bob's chat in a waWorld (and in the scripted tests).
const bobChat = "15550002222@s.whatsapp.net"

// linkedWorld is a connector linked by QR to Ann's account on a fake
// WhatsApp, started with a recording sink. A test's subtests share one:
// linking costs seconds under -race.
type linkedWorld struct {
	*waWorld
	r *rig
	c *Connector
	s *recSink
}

func newLinkedWorld(t *testing.T, wopts fakewa.Options, opts *Options) *linkedWorld {
	t.Helper()
	w := newWAWorld(t, wopts)
	r := newRig(t)
	c, s := r.linkedOnFake(w, "me", opts)
	// Profile pictures are downloaded from the fake's picture host.
	c.desc.http = w.srv.HTTPClient()
	return &linkedWorld{waWorld: w, r: r, c: c, s: s}
}

// fromCarol is an event for chat relayed from Carol on another platform,
// delivered with key.
func fromCarol(kind bridge.Kind, chat types.JID, key string) *bridge.Outgoing {
	return &bridge.Outgoing{
		Event: bridge.Event{Kind: kind, Chat: bridge.ChatRef{Connector: "me", ID: chat.String()}, Sender: bridge.Sender{ID: "carol@api", Name: "Carol"}},
		Key:   key,
	}
}

// send sends out through the connector, failing the test on an error.
func (lw *linkedWorld) send(t testing.TB, out *bridge.Outgoing) string {
	t.Helper()
	id, err := lw.c.Send(ctxFor(t), out)
	if err != nil {
		t.Fatalf("Send %s: %v", out.Key, err)
	}
	return id
}

// got returns the n messages of the delivery keyed key as p's phone
// decrypted them, in order (their ids follow from the key), and checks
// that it got each once and no more: a marker sent to chat after them
// must arrive first.
func (lw *linkedWorld) got(t testing.TB, p *fakewa.Phone, chat types.JID, key string, n int) []fakewa.Message {
	t.Helper()
	lw.marker(t, p, chat, key)
	byID := map[string][]fakewa.Message{}
	for _, m := range p.Messages() {
		byID[m.ID] = append(byID[m.ID], m)
	}
	var out []fakewa.Message
	for i := 0; i < n; i++ {
		ms := byID[messageID(key, i)]
		if len(ms) != 1 {
			t.Fatalf("%s's phone got message %d of %s %d times, want once", p.PushName, i, key, len(ms))
		}
		if ms[0].Err != nil {
			t.Fatalf("%s's phone could not decrypt message %d of %s: %v", p.PushName, i, key, ms[0].Err)
		}
		if ms[0].From.User != lw.ann.PN.User && ms[0].From.User != lw.ann.LID.User {
			t.Errorf("message %d of %s came from %s, want Ann's linked device", i, key, ms[0].From)
		}
		out = append(out, ms[0])
	}
	if extra := byID[messageID(key, n)]; len(extra) > 0 {
		t.Errorf("%s's phone got more than %d messages for %s: %v", p.PushName, n, key, extra[0].Msg)
	}
	return out
}

// marker sends a text to chat after what the test sent, and waits until
// p's phone has it: whatever went to p before has arrived by then.
func (lw *linkedWorld) marker(t testing.TB, p *fakewa.Phone, chat types.JID, after string) {
	t.Helper()
	m := fromCarol(bridge.KindMessage, chat, after+".marker")
	m.Text = "after " + after
	id := lw.send(t, m)
	if _, err := p.WaitMessage(ctxFor(t), func(m fakewa.Message) bool { return m.ID == id }); err != nil {
		t.Fatalf("%s's phone did not get the marker after %s: %v", p.PushName, after, err)
	}
}

// fromPhone has p send msg to chat and waits until the connector handed
// it to the core; it returns the event.
func (lw *linkedWorld) fromPhone(t testing.TB, p *fakewa.Phone, chat types.JID, msg *waE2E.Message) bridge.Event {
	t.Helper()
	id, err := p.Send(ctxFor(t), chat, msg)
	if err != nil {
		t.Fatalf("%s's phone could not send: %v", p.PushName, err)
	}
	return lw.s.waitEvent(t, "message "+id+" from "+p.PushName, func(ev bridge.Event) bool { return ev.ID == id })
}

// says has p send text to chat; it returns the relayed event.
func (lw *linkedWorld) says(t testing.TB, p *fakewa.Phone, chat types.JID, text string) bridge.Event {
	t.Helper()
	return lw.fromPhone(t, p, chat, &waE2E.Message{Conversation: &text})
}

// attach is an attachment of data.
func mediaOf(name, mime string, data []byte) bridge.Media {
	return bridge.Media{Name: name, MIME: mime, Size: int64(len(data)), Open: func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}}
}

// fileBytes is a file's content: a few AES blocks, distinct per name.
func fileBytes(name string) []byte {
	return bytes.Repeat([]byte("the bytes of "+name+"; "), 97)
}

// TestSend: what the connector sends reaches the phones as WhatsApp shows
// it (sender names, formatting, attachments and their captions, replies,
// edits, deletes, reactions, typing and read receipts), with ids that a
// resend repeats.
func TestSend(t *testing.T) {
	lw := newLinkedWorld(t, fakewa.Options{}, nil)
	bob, family := lw.bob.PN, lw.family.JID

	t.Run("text", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			mod  func(o *bridge.Outgoing)
			want string
		}{
			{"sender prefix", func(o *bridge.Outgoing) { o.Text = "hi" }, "*Carol*: hi"},
			{"sender without a name", func(o *bridge.Outgoing) { o.Text = "hi"; o.Sender.Name = "" }, "*carol@api*: hi"},
			{"the owner", func(o *bridge.Outgoing) { o.Text = "hi"; o.Sender.IsOwner = true }, "hi"},
			{"a notice", func(o *bridge.Outgoing) { o.Text = "link 'me' was logged out"; o.Notice = true }, "link 'me' was logged out"},
			{"an emote", func(o *bridge.Outgoing) { o.Text = "waves"; o.Emote = true }, "* Carol waves"},
			{"formatting", func(o *bridge.Outgoing) {
				o.Text, o.HTML = "bold move, struck", "<b>bold</b> <i>move</i>, <s>struck</s> <code>x := 1</code>"
			}, "*Carol*: *bold* _move_, ~struck~ `x := 1`"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				key := "pb.text." + tc.name
				out := fromCarol(bridge.KindMessage, bob, key)
				tc.mod(out)
				id := lw.send(t, out)
				m := lw.got(t, lw.bob, bob, key, 1)[0]
				if m.Text() != tc.want {
					t.Errorf("Bob's phone shows %q, want %q", m.Text(), tc.want)
				}
				if id != m.ID || id != messageID(key, 0) {
					t.Errorf("Send returned %q, the phone got id %q, want both %q", id, m.ID, messageID(key, 0))
				}
			})
		}
	})

	// The id comes from the delivery's key: a delivery sent again (a
	// retry, a resend after a crash) reaches the phone with the same id,
	// which the phone shows once.
	t.Run("deterministic ids", func(t *testing.T) {
		out := fromCarol(bridge.KindMessage, bob, "pb.42.0")
		out.Text = "once"
		first, again := lw.send(t, out), lw.send(t, out)
		lw.marker(t, lw.bob, bob, "pb.42.0")
		var ids []string
		for _, m := range lw.bob.Messages() {
			if m.Text() == "*Carol*: once" {
				ids = append(ids, m.ID)
			}
		}
		if first != again || len(ids) != 2 || ids[0] != first || ids[1] != first {
			t.Errorf("sent twice as %q and %q; the phone got ids %q, want %q twice", first, again, ids, first)
		}
		if !strings.HasPrefix(first, whatsmeow.WebMessageIDPrefix) || len(first) != len(whatsmeow.WebMessageIDPrefix)+18 || strings.ToUpper(first) != first {
			t.Errorf("id %q is not in whatsmeow's format", first)
		}
		other := fromCarol(bridge.KindMessage, bob, "pb.43.0")
		other.Text = "once"
		if id := lw.send(t, other); id == first {
			t.Errorf("another delivery got the same id %q", id)
		}
	})

	t.Run("reply", func(t *testing.T) {
		bobSaid := lw.says(t, lw.bob, lw.ann.PN, "original words")
		eveSaid := lw.says(t, lw.eve, family, "in the group")
		for _, tc := range []struct {
			name        string
			chat        types.JID
			to          *fakewa.Phone
			replyTo     string
			participant string
			quoted      string
		}{
			{"direct chat", bob, lw.bob, bobSaid.ID, bob.String(), "original words"},
			{"group", family, lw.eve, eveSaid.ID, lw.eve.PN.String(), "in the group"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				key := "pb.reply." + tc.name
				out := fromCarol(bridge.KindMessage, tc.chat, key)
				out.Text, out.ReplyTo = "answer", tc.replyTo
				lw.send(t, out)
				ext := lw.got(t, tc.to, tc.chat, key, 1)[0].Msg.GetExtendedTextMessage()
				ci := ext.GetContextInfo()
				if ext.GetText() != "*Carol*: answer" || ci.GetStanzaID() != tc.replyTo || ci.GetParticipant() != tc.participant ||
					ci.GetQuotedMessage().GetConversation() != tc.quoted {
					t.Errorf("the phone got %v, want a reply to %s by %s quoting %q", ext, tc.replyTo, tc.participant, tc.quoted)
				}
			})
		}

		// A reply to our own message names the account as its author.
		own := fromCarol(bridge.KindMessage, bob, "pb.own")
		own.Text = "mine"
		ownID := lw.send(t, own)
		out := fromCarol(bridge.KindMessage, bob, "pb.reply.own")
		out.Text, out.ReplyTo = "to myself", ownID
		lw.send(t, out)
		ci := lw.got(t, lw.bob, bob, "pb.reply.own", 1)[0].Msg.GetExtendedTextMessage().GetContextInfo()
		if ci.GetStanzaID() != ownID || ci.GetParticipant() != lw.ann.PN.String() || ci.GetQuotedMessage().GetConversation() != "mine" {
			t.Errorf("a reply to our own message has context %v", ci)
		}

		// With text and a voice note (which has no caption): the text goes
		// first, alone, and carries the reply; the voice note does not.
		out = fromCarol(bridge.KindMessage, bob, "pb.reply.voice")
		out.Text, out.ReplyTo = "listen", bobSaid.ID
		voice := mediaOf("voice.ogg", "audio/ogg", fileBytes("voice.ogg"))
		voice.Kind = bridge.MediaVoice
		out.Media = []bridge.Media{voice}
		lw.send(t, out)
		got := lw.got(t, lw.bob, bob, "pb.reply.voice", 2)
		if ext := got[0].Msg.GetExtendedTextMessage(); ext.GetText() != "*Carol*: listen" || ext.GetContextInfo().GetStanzaID() != bobSaid.ID {
			t.Errorf("first message %v, want the text replying to Bob's", got[0].Msg)
		}
		if a := got[1].Msg.GetAudioMessage(); a == nil || a.GetContextInfo().GetStanzaID() != "" {
			t.Errorf("second message %v, want the voice note with no reply context", got[1].Msg)
		}

		// A reply to a message the link does not know goes as a plain message.
		out = fromCarol(bridge.KindMessage, bob, "pb.reply.unknown")
		out.Text, out.ReplyTo = "what?", "NOSUCH"
		lw.send(t, out)
		if m := lw.got(t, lw.bob, bob, "pb.reply.unknown", 1)[0].Msg; m.GetConversation() != "*Carol*: what?" {
			t.Errorf("a reply to an unknown message went as %v, want plain text", m)
		}
	})

	t.Run("media", func(t *testing.T) {
		thumb := jpegOf(t, 3)
		for _, tc := range []struct {
			name, file, mime string
			as               bridge.Media // its kind, length, size and waveform
			mediaType        whatsmeow.MediaType
			// check says what is wrong with the message, "" if nothing.
			check   func(m *waE2E.Message) string
			caption bool // the text goes as the caption, not a message of its own
		}{
			{"photo", "photo.jpg", "image/jpeg", bridge.Media{Width: 800, Height: 600, Thumbnail: thumb}, whatsmeow.MediaImage, func(m *waE2E.Message) string {
				i := m.GetImageMessage()
				return want(i != nil && i.GetMimetype() == "image/jpeg" && i.GetWidth() == 800 && i.GetHeight() == 600 && bytes.Equal(i.GetJPEGThumbnail(), thumb),
					"an image/jpeg image of 800x600 with its preview")
			}, true},
			{"video", "clip.mp4", "video/mp4", bridge.Media{DurationMS: 61_400}, whatsmeow.MediaVideo, func(m *waE2E.Message) string {
				v := m.GetVideoMessage()
				return want(v.GetMimetype() == "video/mp4" && v.GetSeconds() == 61 && !v.GetGifPlayback(), "a video/mp4 video of 61 s")
			}, true},
			{"gif", "dance.mp4", "video/mp4", bridge.Media{Kind: bridge.MediaGIF}, whatsmeow.MediaVideo, func(m *waE2E.Message) string {
				return want(m.GetVideoMessage().GetGifPlayback(), "a video played as a GIF")
			}, true},
			{"document", "report.pdf", "application/pdf", bridge.Media{}, whatsmeow.MediaDocument, func(m *waE2E.Message) string {
				d := m.GetDocumentMessage()
				return want(d.GetFileName() == "report.pdf" && d.GetMimetype() == "application/pdf", "report.pdf as a document")
			}, true},
			{"gif as a document", "anim.gif", "image/gif", bridge.Media{}, whatsmeow.MediaDocument, func(m *waE2E.Message) string {
				return want(m.GetDocumentMessage().GetFileName() == "anim.gif", "anim.gif as a document")
			}, true},
			{"voice note", "voice.ogg", "audio/ogg", bridge.Media{Kind: bridge.MediaVoice, DurationMS: 4200, Waveform: []int{0, 1024}}, whatsmeow.MediaAudio, func(m *waE2E.Message) string {
				a := m.GetAudioMessage()
				w := a.GetWaveform()
				return want(a.GetPTT() && a.GetMimetype() == "audio/ogg; codecs=opus" && a.GetSeconds() == 4 && len(w) == 64 && w[0] == 0 && w[63] == 100,
					"a voice note of 4 s with a 64-sample waveform rising to 100")
			}, false},
			{"ogg audio", "song.ogg", "audio/ogg", bridge.Media{}, whatsmeow.MediaAudio, func(m *waE2E.Message) string {
				a := m.GetAudioMessage()
				return want(a != nil && !a.GetPTT(), "audio that is not a voice note")
			}, false},
			{"voice note WhatsApp would refuse", "memo.m4a", "audio/mp4", bridge.Media{Kind: bridge.MediaVoice}, whatsmeow.MediaAudio, func(m *waE2E.Message) string {
				a := m.GetAudioMessage()
				return want(a != nil && !a.GetPTT() && a.GetMimetype() == "audio/mp4", "audio/mp4 audio, not a voice note")
			}, false},
			{"audio known by its name", "song.mp3", "", bridge.Media{}, whatsmeow.MediaAudio, func(m *waE2E.Message) string {
				a := m.GetAudioMessage()
				return want(a != nil && !a.GetPTT() && a.GetMimetype() == "audio/mpeg", "audio/mpeg audio")
			}, false},
			{"sticker", "s.webp", "image/webp", bridge.Media{Kind: bridge.MediaSticker, Width: 512, Height: 512}, whatsmeow.MediaImage, func(m *waE2E.Message) string {
				s := m.GetStickerMessage()
				return want(s != nil && s.GetMimetype() == "image/webp" && s.GetWidth() == 512, "a WebP sticker of 512 px")
			}, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				data := fileBytes(tc.file)
				key := "pb.media." + tc.name
				out := fromCarol(bridge.KindMessage, bob, key)
				out.Text = "look"
				m := mediaOf(tc.file, tc.mime, data)
				m.Kind, m.DurationMS, m.Width, m.Height, m.Waveform, m.Thumbnail = tc.as.Kind, tc.as.DurationMS, tc.as.Width, tc.as.Height, tc.as.Waveform, tc.as.Thumbnail
				out.Media = []bridge.Media{m}
				uploads := len(lw.srv.Uploads())
				id := lw.send(t, out)
				n := 1
				if !tc.caption {
					n = 2 // these carry no caption: the text goes first, alone
				}
				got := lw.got(t, lw.bob, bob, key, n)
				media := got[n-1]
				if problem := tc.check(media.Msg); problem != "" {
					t.Errorf("the phone got %v, want %s", media.Msg, problem)
				}
				if ups := lw.srv.Uploads()[uploads:]; len(ups) != 1 || ups[0].MediaType != tc.mediaType {
					t.Errorf("uploads %+v, want one with %q keys", ups, tc.mediaType)
				}
				// The phone downloads the file and checks its hashes and MAC.
				plain, err := lw.srv.DownloadMedia(ctxFor(t), media.Attachment())
				if err != nil || !bytes.Equal(plain, data) {
					t.Errorf("the phone decrypts %d bytes (%v), want the %d sent", len(plain), err, len(data))
				}
				if tc.caption && media.Text() != "*Carol*: look" {
					t.Errorf("caption %q, want the prefixed text", media.Text())
				}
				if !tc.caption && got[0].Text() != "*Carol*: look" {
					t.Errorf("the text went as %v, want its own message", got[0].Msg)
				}
				if id != got[0].ID {
					t.Errorf("Send returned %q, want the first message's id %q", id, got[0].ID)
				}
			})
		}

		// What cannot be sent fails for good, with nothing uploaded or sent.
		lw.c.opts.MaxMediaBytes = 8 // as if configured so; restored below
		defer func() { lw.c.opts.MaxMediaBytes = DefaultMaxMediaBytes }()
		for name, m := range map[string]bridge.Media{
			"over max_media_bytes": mediaOf("big.jpg", "image/jpeg", []byte("nine byte")),
			"not openable":         {Name: "gone.jpg", MIME: "image/jpeg"},
		} {
			key := "pb.bad." + name
			out := fromCarol(bridge.KindMessage, bob, key)
			out.Media = []bridge.Media{m}
			uploads := len(lw.srv.Uploads())
			if _, err := lw.c.Send(ctxFor(t), out); !bridge.IsPermanent(err) {
				t.Errorf("%s: %v, want a permanent error", name, err)
			}
			lw.got(t, lw.bob, bob, key, 0)
			if n := len(lw.srv.Uploads()) - uploads; n != 0 {
				t.Errorf("%s: %d uploads, want none", name, n)
			}
		}
	})

	t.Run("mentions", func(t *testing.T) {
		// Bob and the owner, named by the words of another platform's
		// text, become WhatsApp @-mentions; a person of another platform
		// stays words.
		out := fromCarol(bridge.KindMessage, family, "pb.mention")
		out.Text, out.HTML = "@Bob (WhatsApp) and @Ann, ask @dave", "<b>@Bob (WhatsApp)</b> and @Ann, ask @dave"
		out.Mentions = []bridge.Mention{
			{ID: lw.bob.PN.String(), Name: "Bob", Text: "@Bob (WhatsApp)"},
			{Owner: true, Name: "Ann", Text: "@Ann"},
			{ID: "dave@irc", Name: "dave", Text: "@dave"},
		}
		lw.send(t, out)
		m := lw.got(t, lw.eve, family, "pb.mention", 1)[0].Msg.GetExtendedTextMessage()
		want := "*Carol*: *@" + lw.bob.PN.User + "* and @" + lw.ann.PN.User + ", ask @dave"
		if m.GetText() != want || !slices.Equal(m.GetContextInfo().GetMentionedJID(), []string{lw.bob.PN.String(), lw.ann.PN.String()}) {
			t.Errorf("Eve's phone got %q mentioning %v; want %q mentioning Bob and Ann", m.GetText(), m.GetContextInfo().GetMentionedJID(), want)
		}
	})

	t.Run("a poll", func(t *testing.T) {
		out := fromCarol(bridge.KindMessage, family, "pb.poll")
		out.Poll = &bridge.Poll{Question: "Lunch?", Options: []string{"Pizza", "Sushi", "Salad"}, Choices: 1}
		id := lw.send(t, out)
		for _, p := range []*fakewa.Phone{lw.eve, lw.bob} {
			got := lw.got(t, p, family, "pb.poll", 1)[0]
			pc := got.Msg.GetPollCreationMessage()
			var options []string
			for _, o := range pc.GetOptions() {
				options = append(options, o.GetOptionName())
			}
			if pc.GetName() != "*Carol*: Lunch?" || !slices.Equal(options, []string{"Pizza", "Sushi", "Salad"}) || pc.GetSelectableOptionsCount() != 1 ||
				len(got.Msg.GetMessageContextInfo().GetMessageSecret()) != 32 || got.ID != id {
				t.Errorf("%s's phone got the poll as %v (secret %d bytes)", p.PushName, got.Msg, len(got.Msg.GetMessageContextInfo().GetMessageSecret()))
			}
		}
	})

	t.Run("a place", func(t *testing.T) {
		out := fromCarol(bridge.KindMessage, bob, "pb.place")
		out.Text = "meet here"
		out.Location = &bridge.Location{Latitude: -33.8568, Longitude: 151.2153, Name: "Opera House", Address: "Bennelong Point", Live: true}
		id := lw.send(t, out)
		got := lw.got(t, lw.bob, bob, "pb.place", 1)[0]
		l := got.Msg.GetLocationMessage()
		if l == nil || l.GetDegreesLatitude() != -33.8568 || l.GetDegreesLongitude() != 151.2153 || l.GetName() != "Opera House" ||
			l.GetAddress() != "Bennelong Point" || l.GetComment() != "*Carol*: meet here" || got.ID != id {
			t.Errorf("the phone got %v (id %s), want the Opera House with Carol's words (id %s)", got.Msg, got.ID, id)
		}
		// A place without words still says who shared it.
		out = fromCarol(bridge.KindMessage, bob, "pb.place.bare")
		out.Location = &bridge.Location{Latitude: 1, Longitude: 2}
		lw.send(t, out)
		if l := lw.got(t, lw.bob, bob, "pb.place.bare", 1)[0].Msg.GetLocationMessage(); l.GetComment() != "*Carol*" || l.GetName() != "" {
			t.Errorf("a bare place went as %v", l)
		}
	})

	t.Run("captions", func(t *testing.T) {
		bobSaid := lw.says(t, lw.bob, lw.ann.PN, "original words")
		photo := func(caption string) bridge.Media {
			m := mediaOf("photo.jpg", "image/jpeg", fileBytes("photo.jpg"))
			m.Caption = caption
			return m
		}
		voice := func(caption string) bridge.Media {
			m := mediaOf("voice.ogg", "audio/ogg", fileBytes("voice.ogg"))
			m.Caption = caption
			return m
		}
		doc := mediaOf("report.pdf", "application/pdf", fileBytes("report.pdf"))
		doc.Caption = "the numbers"

		for _, tc := range []struct {
			name       string
			text, html string
			media      []bridge.Media
			owner      bool
			want       []string
		}{
			{"a caption alone", "", "", []bridge.Media{photo("beach")}, false,
				[]string{"image: *Carol*: beach"}},
			{"a document's caption", "", "", []bridge.Media{doc}, false,
				[]string{"document: *Carol*: the numbers"}},
			{"text and captioned photos", "holiday", "", []bridge.Media{photo("beach"), photo("sunset")}, false,
				[]string{"text: *Carol*: holiday", "image: beach", "image: sunset"}},
			{"text on the uncaptioned first photo", "holiday", "", []bridge.Media{photo(""), photo("sunset")}, false,
				[]string{"image: *Carol*: holiday", "image: sunset"}},
			{"the caption is the text", "look", "", []bridge.Media{photo("look")}, false,
				[]string{"image: *Carol*: look"}},
			{"a photo without words", "", "", []bridge.Media{photo(""), photo("sunset")}, false,
				[]string{"image: *Carol*: ", "image: sunset"}},
			{"a voice note's caption follows it", "", "", []bridge.Media{voice("listen to this")}, false,
				[]string{"audio", "text: *Carol*: listen to this"}},
			{"text, then the voice note and its caption", "hi", "", []bridge.Media{voice("listen")}, false,
				[]string{"text: *Carol*: hi", "audio", "text: listen"}},
			{"a voice note after a photo", "", "", []bridge.Media{photo(""), voice("a song")}, false,
				[]string{"image: *Carol*: ", "audio", "text: a song"}},
			{"a voice note without words", "", "", []bridge.Media{voice("")}, false,
				[]string{"text: *Carol*: ", "audio"}},
			{"the owner's caption", "", "", []bridge.Media{photo("beach")}, true,
				[]string{"image: beach"}},
			{"the owner's voice note", "", "", []bridge.Media{voice("")}, true,
				[]string{"audio"}},
			{"formatted text as the caption", "bold move", "<b>bold</b> move", []bridge.Media{photo("")}, false,
				[]string{"image: *Carol*: *bold* move"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				key := "pb.caption." + tc.name
				out := fromCarol(bridge.KindMessage, bob, key)
				out.Text, out.HTML, out.Media, out.Sender.IsOwner, out.ReplyTo = tc.text, tc.html, tc.media, tc.owner, bobSaid.ID
				id := lw.send(t, out)
				got := lw.got(t, lw.bob, bob, key, len(tc.want))
				var shows []string
				for _, m := range got {
					shows = append(shows, shown(m.Msg))
				}
				if strings.Join(shows, " | ") != strings.Join(tc.want, " | ") {
					t.Errorf("the phone got\n  %q\nwant\n  %q", shows, tc.want)
				}
				if id != got[0].ID {
					t.Errorf("Send returned %q, want the first message's id", id)
				}
				// The reply context is on the first message only.
				for i, m := range got {
					if replies := contextOf(m.Msg).GetStanzaID() == bobSaid.ID; replies != (i == 0) {
						t.Errorf("message %d (%s) replies to Bob's: %v, want only the first to", i, shown(m.Msg), replies)
					}
				}
			})
		}
	})

	t.Run("edit delete react", func(t *testing.T) {
		mine := fromCarol(bridge.KindMessage, bob, "pb.1.0")
		mine.Text = "tpyo"
		mineID := lw.send(t, mine)
		bobSaid := lw.says(t, lw.bob, lw.ann.PN, "from Bob")

		// Editing our own message.
		edit := fromCarol(bridge.KindEdit, bob, "pb.2.0")
		edit.Text, edit.Target = "typo", mineID
		id := lw.send(t, edit)
		m := lw.got(t, lw.bob, bob, "pb.2.0", 1)[0]
		pm := m.Msg.GetEditedMessage().GetMessage().GetProtocolMessage()
		if pm.GetType() != waE2E.ProtocolMessage_MESSAGE_EDIT || pm.GetKey().GetID() != mineID || !pm.GetKey().GetFromMe() ||
			pm.GetKey().GetRemoteJID() != bobChat || pm.GetEditedMessage().GetConversation() != "*Carol*: typo" {
			t.Errorf("the phone got the edit as %v, want an edit of %s to %q", m.Msg, mineID, "*Carol*: typo")
		}
		if id != m.ID {
			t.Errorf("the edit's id %q, the phone got %q", id, m.ID)
		}

		// Past WhatsApp's 15 minutes the phones would ignore an edit: the
		// corrected copy goes instead, answering the message it corrects.
		old := fromCarol(bridge.KindMessage, bob, "pb.late.0")
		old.Text = "meet at 9"
		oldID := lw.send(t, old)
		err := lw.c.store.Write(ctxFor(t), func(tx *bridge.Tx) error {
			_, err := tx.Exec(`UPDATE whatsapp_messages SET at = ? WHERE id = ?`, time.Now().Add(-16*time.Minute).Unix(), oldID)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		late := fromCarol(bridge.KindEdit, bob, "pb.late.1")
		late.Text, late.Target = "meet at 10", oldID
		lateID := lw.send(t, late)
		copyMsg := lw.got(t, lw.bob, bob, "pb.late.1", 1)[0]
		ext := copyMsg.Msg.GetExtendedTextMessage()
		if copyMsg.Msg.GetEditedMessage() != nil || ext.GetText() != "✎ *Carol*: meet at 10" || ext.GetContextInfo().GetStanzaID() != oldID || copyMsg.ID != lateID {
			t.Errorf("a late edit reached the phone as %v, want the corrected copy answering %s", copyMsg.Msg, oldID)
		}

		// A live location moved elsewhere: a linked device cannot move a
		// place on WhatsApp, so nothing goes out, and that is no failure.
		move := fromCarol(bridge.KindEdit, bob, "pb.move.0")
		move.Location, move.Target = &bridge.Location{Latitude: 1, Longitude: 2, Live: true}, mineID
		if id, err := lw.c.Send(ctxFor(t), move); err != nil || id != "" {
			t.Errorf("a live location's move: %q, %v; want nothing sent and no error", id, err)
		}
		lw.got(t, lw.bob, bob, "pb.move.0", 0)

		// Someone else's message, or one the link does not know: for good,
		// and nothing goes out.
		for _, target := range []string{bobSaid.ID, "NOSUCH"} {
			key := "pb.3." + target
			bad := fromCarol(bridge.KindEdit, bob, key)
			bad.Text, bad.Target = "changed", target
			if _, err := lw.c.Send(ctxFor(t), bad); !bridge.IsPermanent(err) {
				t.Errorf("an edit of %s: %v, want a permanent error", target, err)
			}
			lw.got(t, lw.bob, bob, key, 0)
		}

		// Reactions to Bob's message, and taking one back.
		for _, emoji := range []string{"👍", ""} {
			kind, key := bridge.KindReaction, "pb.4.0"
			if emoji == "" {
				kind, key = bridge.KindReactionRemove, "pb.5.0"
			}
			react := fromCarol(kind, bob, key)
			react.Target, react.Emoji = bobSaid.ID, emoji
			lw.send(t, react)
			rm := lw.got(t, lw.bob, bob, key, 1)[0].Msg.GetReactionMessage()
			k := rm.GetKey()
			if rm == nil || rm.Text == nil || rm.GetText() != emoji || k.GetID() != bobSaid.ID || k.GetFromMe() || k.GetRemoteJID() != bobChat || k.Participant != nil {
				t.Errorf("%s reached the phone as %v, want %q on Bob's message", kind, rm, emoji)
			}
		}
		// In a group the key names the message's author.
		eveSaid := lw.says(t, lw.eve, family, "hello group")
		react := fromCarol(bridge.KindReaction, family, "pb.6.0")
		react.Target, react.Emoji = eveSaid.ID, "🎉"
		lw.send(t, react)
		for _, p := range []*fakewa.Phone{lw.eve, lw.bob} {
			k := lw.got(t, p, family, "pb.6.0", 1)[0].Msg.GetReactionMessage().GetKey()
			if k.GetID() != eveSaid.ID || k.GetParticipant() != lw.eve.PN.String() || k.GetFromMe() {
				t.Errorf("%s's phone got the group reaction's key as %v, want Eve's message", p.PushName, k)
			}
		}

		// Deleting our own message revokes it for everyone.
		del := fromCarol(bridge.KindDelete, bob, "pb.7.0")
		del.Target = mineID
		lw.send(t, del)
		pm = lw.got(t, lw.bob, bob, "pb.7.0", 1)[0].Msg.GetProtocolMessage()
		if pm.GetType() != waE2E.ProtocolMessage_REVOKE || pm.GetKey().GetID() != mineID || !pm.GetKey().GetFromMe() {
			t.Errorf("the phone got the delete as %v, want a revoke of %s", pm, mineID)
		}
	})

	t.Run("typing and read", func(t *testing.T) {
		ctx := ctxFor(t)
		bobSaid := lw.says(t, lw.bob, lw.ann.PN, "are you there?")
		before := len(lw.bob.Messages())
		if id, err := lw.c.Send(ctx, fromCarol(bridge.KindTyping, bob, "")); err != nil || id != "" {
			t.Fatalf("typing: %q, %v", id, err)
		}
		if _, err := lw.bob.WaitPresence(ctx, func(p fakewa.Presence) bool {
			_, composing := p.Node.GetOptionalChildByTag("composing")
			return p.Node.Tag == "chatstate" && composing && p.From.User == lw.ann.PN.User
		}); err != nil {
			t.Errorf("Bob's phone saw no typing from Ann: %v", err)
		}
		stop := fromCarol(bridge.KindTyping, bob, "")
		stop.StoppedTyping = true
		if _, err := lw.c.Send(ctx, stop); err != nil {
			t.Fatalf("typing stopped: %v", err)
		}
		if _, err := lw.bob.WaitPresence(ctx, func(p fakewa.Presence) bool {
			_, paused := p.Node.GetOptionalChildByTag("paused")
			return p.Node.Tag == "chatstate" && paused && p.From.User == lw.ann.PN.User
		}); err != nil {
			t.Errorf("Bob's phone saw no pause from Ann: %v", err)
		}

		// A read receipt for an unknown message is dropped quietly; one
		// for Bob's message reaches his phone.
		unknown := fromCarol(bridge.KindRead, bob, "")
		unknown.Target = "NOSUCH"
		if _, err := lw.c.Send(ctx, unknown); err != nil {
			t.Errorf("read of an unknown message: %v, want it dropped quietly", err)
		}
		read := fromCarol(bridge.KindRead, bob, "")
		read.Target = bobSaid.ID
		if _, err := lw.c.Send(ctx, read); err != nil {
			t.Fatalf("read: %v", err)
		}
		r, err := lw.bob.WaitReceipt(ctx, func(r fakewa.Receipt) bool { return r.Type == "read" })
		if err != nil || len(r.IDs) != 1 || r.IDs[0] != bobSaid.ID || r.From.User != lw.ann.PN.User {
			t.Errorf("Bob's phone got read receipt %+v (%v), want one for his message from Ann", r, err)
		}
		// Neither went as a message: the marker is the one thing since.
		lw.marker(t, lw.bob, bob, "pb.typing-and-read")
		if n := len(lw.bob.Messages()) - before; n != 1 {
			t.Errorf("Bob's phone got %d messages besides the marker, want none", n-1)
		}
	})

	t.Run("errors", func(t *testing.T) {
		ctx := ctxFor(t)
		text := func(chat string) *bridge.Outgoing {
			o := relayedOut(bridge.KindMessage, chat, "pb.err."+chat)
			o.Text = "hi"
			return o
		}
		for _, chat := range []string{"general", "", "@s.whatsapp.net"} {
			if _, err := lw.c.Send(ctx, text(chat)); !bridge.IsPermanent(err) {
				t.Errorf("chat %q: %v, want a permanent error", chat, err)
			}
		}
		if _, err := lw.c.Send(ctx, relayedOut(bridge.KindMessage, bobChat, "pb.empty")); !bridge.IsPermanent(err) {
			t.Errorf("a message with nothing in it: %v, want a permanent error", err)
		}
		// WhatsApp refuses groups the account is not in, or that do not exist.
		others := lw.srv.NewGroup("120363000000000077", "Not Ann's", lw.bob, lw.eve)
		if _, err := lw.c.Send(ctx, text(others.JID.String())); !bridge.IsPermanent(err) || !errors.Is(err, whatsmeow.ErrNotInGroup) {
			t.Errorf("a group the account is not in: %v, want a permanent ErrNotInGroup", err)
		}
		if _, err := lw.c.Send(ctx, text("120363000000000088@g.us")); !bridge.IsPermanent(err) || !errors.Is(err, whatsmeow.ErrGroupNotFound) {
			t.Errorf("a group that does not exist: %v, want a permanent ErrGroupNotFound", err)
		}

		// A link that is not running: the event waits, except a bad chat id.
		idle := lw.r.openOnFake(lw.waWorld, "other", nil)
		if _, err := idle.Send(ctx, text(bobChat)); err == nil || bridge.IsPermanent(err) || !strings.Contains(err.Error(), "not connected") {
			t.Errorf("not linked: %v, want a transient error saying it is not connected", err)
		}
		if _, err := idle.Send(ctx, text("general")); !bridge.IsPermanent(err) {
			t.Errorf("not linked, bad chat id: %v, want a permanent error", err)
		}

		// WhatsApp out of reach: the event waits (last: this drops the link).
		lw.net.Down()
		defer lw.net.Up()
		lw.srv.Kick(lw.ann)
		lw.s.waitFor(t, "the link to notice", lw.s.stateIsNot(bridge.StateConnected))
		if _, err := lw.c.Send(ctx, text(bobChat)); err == nil || bridge.IsPermanent(err) {
			t.Errorf("disconnected: %v, want a transient error", err)
		}
	})
}

// want is "" when ok, else what was wanted.
func want(ok bool, what string) string {
	if ok {
		return ""
	}
	return what
}

// shown is how a message reads in the chat: "text: ...", or the
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

// contextOf is the context (reply, mentions) of a content message.
func contextOf(m *waE2E.Message) *waE2E.ContextInfo {
	switch {
	case m.ExtendedTextMessage != nil:
		return m.GetExtendedTextMessage().GetContextInfo()
	case m.ImageMessage != nil:
		return m.GetImageMessage().GetContextInfo()
	case m.VideoMessage != nil:
		return m.GetVideoMessage().GetContextInfo()
	case m.DocumentMessage != nil:
		return m.GetDocumentMessage().GetContextInfo()
	case m.AudioMessage != nil:
		return m.GetAudioMessage().GetContextInfo()
	case m.StickerMessage != nil:
		return m.GetStickerMessage().GetContextInfo()
	}
	return nil
}

// TestSenderFormat: the sender's name is written as sender_format says;
// the rest of the layout is proved on the wire by TestSend.
func TestSenderFormat(t *testing.T) {
	c := &Connector{opts: Options{SenderFormat: "[{name}] "}}
	for _, tc := range []struct {
		out        bridge.Outgoing
		text, html string
	}{
		{bridge.Outgoing{Event: bridge.Event{Sender: bridge.Sender{Name: "Carol"}, Text: "hi"}}, "[Carol] hi", ""},
		{bridge.Outgoing{Event: bridge.Event{Sender: bridge.Sender{Name: "A<B"}, Text: "x", HTML: "<b>x</b>"}}, "[A<B] x", "[A&lt;B] <b>x</b>"},
		{bridge.Outgoing{Event: bridge.Event{Sender: bridge.Sender{ID: "carol@api"}, Text: "hi"}}, "[carol@api] hi", ""},
	} {
		if text, html := c.body(&tc.out); text != tc.text || html != tc.html {
			t.Errorf("body(%+v) = %q, %q; want %q, %q", tc.out.Event, text, html, tc.text, tc.html)
		}
	}
}

// stateIsNot is a sink condition: the last state reported is not st.
func (s *recSink) stateIsNot(st bridge.State) func() bool {
	return func() bool { return len(s.states) > 0 && s.states[len(s.states)-1].State != st }
}
