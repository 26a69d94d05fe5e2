package whatsapp

// Relaying on the wire: phones on internal/fakewa send through the real
// whatsmeow client to the connector (and on through the real core to an
// API client), and the API client's events reach the phones.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waCommon"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/config"
	_ "github.com/phonebridge/phonebridge/connectors/api" // the api connector type
	"github.com/phonebridge/phonebridge/internal/daemontest"
	"github.com/phonebridge/phonebridge/internal/fakewa"
)

// relayRig is a real bridge from a config: the WhatsApp link "me", linked
// by QR to Ann's account on a fake WhatsApp, and an api connector, with
// routes bob (Bob's chat ↔ API chat bob) and family (the group named
// Family ↔ API chat family), and notices to API chat notices.
type relayRig struct {
	*waWorld
	b       *bridge.Bridge
	c       *Connector
	addr    string
	client  *daemontest.Client
	pending []daemontest.Frame // events read while waiting for another chat's
}

func newRelayRig(t *testing.T) *relayRig {
	t.Helper()
	w := newWAWorld(t, fakewa.Options{})
	cfg, addr := rigConfig(t, `notices:
  connector: api
  chat: notices
`, fmt.Sprintf(`  - name: bob
    endpoints:
      - {connector: me, chat: "%s"}
      - {connector: api, chat: bob}
  - name: family
    endpoints:
      - {connector: me, chat: Family}
      - {connector: api, chat: family}
`, bobChat))
	rr := &relayRig{waWorld: w, addr: addr}
	var err error
	rr.b, err = bridge.Open(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	l, _ := rr.b.Linker("me")
	rr.c = l.(*Connector)
	w.onFake(rr.c)
	rr.c.desc.http = w.srv.HTTPClient()
	if err := rr.b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.srv.Quiesce(2 * time.Second) // see Quiesce: whatsmeow's close races a send
		ctx, cancel := context.WithTimeout(context.Background(), waitBound)
		defer cancel()
		if err := rr.b.Stop(ctx); err != nil {
			t.Errorf("stop the bridge: %v", err)
		}
	})
	linkByQR(t, rr.c, w.ann)
	waitUntil(t, "the link to be connected", func() bool {
		st := rr.b.Links()
		return len(st) == 1 && st[0].State == bridge.LinkConnected
	})

	rr.client, err = daemontest.Dial(addr, daemontest.Token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rr.client.Close() })
	for _, chat := range []string{"bob", "family", "notices"} {
		if err := rr.client.Subscribe(chat, -1); err != nil {
			t.Fatal(err)
		}
	}
	return rr
}

// rigConfig is the config of a real bridge with the WhatsApp link "me"
// and an api connector listening at addr; notices (YAML at the top level)
// and routes (YAML under routes:) are what rigs differ in.
func rigConfig(t *testing.T, notices, routes string) (cfg *config.Config, addr string) {
	t.Helper()
	dir := t.TempDir()
	addr = fmt.Sprintf("127.0.0.1:%d", daemontest.FreePort(t))
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
state_dir: ./state
delivery:
  retry_min: 10ms
  retry_max: 200ms
%sconnectors:
  me:
    type: whatsapp
    reconnect_max: 1s
  api:
    type: api
    listen: %s
    token: %s
routes:
%s`, notices, addr, daemontest.Token, routes)), filepath.Join(dir, "phonebridge.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, addr
}

// event waits for the next event the API client is delivered in chat,
// keeping other chats' for later.
func (rr *relayRig) event(t *testing.T, chat string) daemontest.Frame {
	t.Helper()
	for i, f := range rr.pending {
		if f.Chat == chat {
			rr.pending = slices.Delete(rr.pending, i, i+1)
			return f
		}
	}
	timeout := time.After(waitBound)
	for {
		select {
		case f := <-rr.client.Events:
			if f.Chat == chat {
				return f
			}
			rr.pending = append(rr.pending, f)
		case <-rr.client.Closed:
			t.Fatalf("the API connection closed: %v", rr.client.Err())
		case <-timeout:
			t.Fatalf("no event reached API chat %s within %v", chat, waitBound)
		}
	}
}

// send sends ev from the API client and returns the answer (ack or error).
func (rr *relayRig) send(t *testing.T, ev daemontest.WireEvent) daemontest.Frame {
	t.Helper()
	if err := rr.client.Send(ev.ID, ev); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-rr.client.Acks:
		return f
	case <-time.After(waitBound):
		t.Fatalf("no answer to send %s within %v", ev.ID, waitBound)
	}
	return daemontest.Frame{}
}

// sendOK sends ev and fails unless it is acknowledged.
func (rr *relayRig) sendOK(t *testing.T, ev daemontest.WireEvent) {
	t.Helper()
	if f := rr.send(t, ev); f.Type != "ack" {
		t.Fatalf("send %s: %+v, want an ack", ev.ID, f)
	}
}

// phoneGets waits until p's phone has a message from Ann's linked device
// that satisfies ok.
func (rr *relayRig) phoneGets(t *testing.T, p *fakewa.Phone, what string, ok func(fakewa.Message) bool) fakewa.Message {
	t.Helper()
	m, err := p.WaitMessage(ctxFor(t), func(m fakewa.Message) bool {
		return m.From.User == rr.ann.PN.User && m.Err == nil && ok(m)
	})
	if err != nil {
		t.Fatalf("%s's phone never got %s: %v", p.PushName, what, err)
	}
	return m
}

// mediaBytes fetches an attachment the API serves at url.
func (rr *relayRig) mediaBytes(t *testing.T, url string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+rr.addr+url, nil)
	req.Header.Set("Authorization", "Bearer "+daemontest.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return body
}

var apiCarol = &daemontest.WireSender{ID: "apiCarol", Name: "Carol"}

// TestRelay relays both ways through the real core and an API client:
// WhatsApp messages (text with formatting, attachments, the owner's own
// from the phone, group messages by name) reach the API once however often
// the phone sends them, and the API client's messages, attachments,
// replies, edits, deletes and reactions reach the phones with their ids
// rewritten to WhatsApp's.
func TestRelay(t *testing.T) {
	rr := newRelayRig(t)
	ctx := ctxFor(t)
	var bobOnAPI string  // Bob's first message, as the API knows it
	var bobOnWA string   // and as WhatsApp does
	var carolOnWA string // Carol's first message, as WhatsApp knows it

	t.Run("whatsapp to api", func(t *testing.T) {
		id, err := rr.bob.SendText(ctx, rr.ann.PN, "hello from *WhatsApp*")
		if err != nil {
			t.Fatal(err)
		}
		f := rr.event(t, "bob")
		if e := f.Event; e.Text != "hello from *WhatsApp*" || e.HTML != "hello from <b>WhatsApp</b>" || e.Sender == nil || e.Sender.Name != "Bob" || e.Sender.ID != bobChat {
			t.Fatalf("the API got %+v %+v, want Bob's message", f, e)
		}
		bobOnAPI, bobOnWA = f.Event.ID, id

		// The phone sending it again (as a phone does when it saw no
		// receipt) relays it once: next comes the next one.
		if err := rr.bob.SendWithID(ctx, rr.ann.PN, id, &waE2E.Message{Conversation: proto.String("hello from *WhatsApp*")}); err != nil {
			t.Fatal(err)
		}
		rr.bob.SendText(ctx, rr.ann.PN, "second")
		if f := rr.event(t, "bob"); f.Event.Text != "second" {
			t.Fatalf("after the same message again the API got %q, want the next one", f.Event.Text)
		}
	})

	t.Run("api to whatsapp", func(t *testing.T) {
		if bobOnAPI == "" {
			t.Fatal("no message of Bob's to reply to: whatsapp to api failed")
		}
		// As Ann, with Carol's name in front.
		rr.sendOK(t, daemontest.WireEvent{ID: "api-1", Kind: "message", Chat: "bob", Sender: apiCarol, Text: "hi from the API", HTML: "hi from <i>the API</i>"})
		carolOnWA = rr.phoneGets(t, rr.bob, "Carol's message", func(m fakewa.Message) bool {
			return m.Text() == "*Carol*: hi from _the API_"
		}).ID

		// A reply to Bob's message quotes it by its WhatsApp id.
		rr.sendOK(t, daemontest.WireEvent{ID: "api-2", Kind: "message", Chat: "bob", Sender: apiCarol, Text: "indeed", ReplyTo: bobOnAPI})
		m := rr.phoneGets(t, rr.bob, "the reply", func(m fakewa.Message) bool { return m.Text() == "*Carol*: indeed" })
		if ci := m.Msg.GetExtendedTextMessage().GetContextInfo(); ci.GetStanzaID() != bobOnWA || ci.GetParticipant() != bobChat {
			t.Errorf("the reply reached the phone as %v, want it quoting %s", m.Msg, bobOnWA)
		}

		// Editing, reacting and deleting act on the WhatsApp copies.
		rr.sendOK(t, daemontest.WireEvent{ID: "api-3", Kind: "edit", Chat: "bob", Sender: apiCarol, Target: "api-1", Text: "hi from the API, edited"})
		m = rr.phoneGets(t, rr.bob, "the edit", func(m fakewa.Message) bool { return m.Msg.GetEditedMessage() != nil })
		pm := m.Msg.GetEditedMessage().GetMessage().GetProtocolMessage()
		if pm.GetKey().GetID() != carolOnWA || pm.GetEditedMessage().GetConversation() != "*Carol*: hi from the API, edited" {
			t.Errorf("the edit reached the phone as %v, want an edit of %s", m.Msg, carolOnWA)
		}
		rr.sendOK(t, daemontest.WireEvent{ID: "api-4", Kind: "reaction", Chat: "bob", Sender: apiCarol, Target: bobOnAPI, Emoji: "👍"})
		m = rr.phoneGets(t, rr.bob, "the reaction", func(m fakewa.Message) bool { return m.Msg.GetReactionMessage() != nil })
		if rm := m.Msg.GetReactionMessage(); rm.GetKey().GetID() != bobOnWA || rm.GetText() != "👍" {
			t.Errorf("the reaction reached the phone as %v, want 👍 on %s", m.Msg, bobOnWA)
		}
		rr.sendOK(t, daemontest.WireEvent{ID: "api-5", Kind: "delete", Chat: "bob", Sender: apiCarol, Target: "api-1"})
		m = rr.phoneGets(t, rr.bob, "the delete", func(m fakewa.Message) bool { return m.Msg.GetProtocolMessage() != nil })
		if pm := m.Msg.GetProtocolMessage(); pm.GetType() != waE2E.ProtocolMessage_REVOKE || pm.GetKey().GetID() != carolOnWA {
			t.Errorf("the delete reached the phone as %v, want a revoke of %s", m.Msg, carolOnWA)
		}
	})

	t.Run("media both ways", func(t *testing.T) {
		// A photo from the phone: the API serves its bytes, which the
		// connector downloaded from WhatsApp and decrypted.
		photo := fileBytes("bob's photo")
		mi, err := rr.srv.EncryptMedia(photo, whatsmeow.MediaImage)
		if err != nil {
			t.Fatal(err)
		}
		im := mi.Image("image/jpeg", "look")
		im.JPEGThumbnail = jpegOf(t, 5)
		if _, err := rr.bob.Send(ctx, rr.ann.PN, &waE2E.Message{ImageMessage: im}); err != nil {
			t.Fatal(err)
		}
		f := rr.event(t, "bob")
		if len(f.Event.Media) != 1 || f.Event.Text != "look" || f.Event.Media[0].MIME != "image/jpeg" {
			t.Fatalf("the API got %+v, want the photo with its caption", f.Event)
		}
		if !bytes.Equal(f.Event.Media[0].Thumbnail, im.JPEGThumbnail) {
			t.Errorf("the API got the photo's preview as %d bytes, want the phone's %d", len(f.Event.Media[0].Thumbnail), len(im.JPEGThumbnail))
		}
		sum := sha256.Sum256(photo)
		if url := f.Event.Media[0].URL; url != "/v1/media/"+hex.EncodeToString(sum[:]) || string(rr.mediaBytes(t, url)) != string(photo) {
			t.Errorf("the API serves the photo at %q with other bytes than the phone sent", url)
		}

		// Attachments from the API, each with its own caption: the phone
		// decrypts the same bytes.
		chart, notes := fileBytes("chart.png"), fileBytes("notes.pdf")
		rr.sendOK(t, daemontest.WireEvent{ID: "api-media", Kind: "message", Chat: "bob", Sender: apiCarol, Media: []daemontest.WireMedia{
			{MIME: "image/png", Name: "chart.png", Caption: "today", Data: base64.StdEncoding.EncodeToString(chart)},
			{MIME: "application/pdf", Name: "notes.pdf", Caption: "the notes", Data: base64.StdEncoding.EncodeToString(notes)},
		}})
		img := rr.phoneGets(t, rr.bob, "the chart", func(m fakewa.Message) bool { return m.Msg.GetImageMessage() != nil })
		doc := rr.phoneGets(t, rr.bob, "the notes", func(m fakewa.Message) bool { return m.Msg.GetDocumentMessage() != nil })
		for _, tc := range []struct {
			m       fakewa.Message
			caption string
			data    []byte
		}{{img, "*Carol*: today", chart}, {doc, "the notes", notes}} {
			got, err := rr.srv.DownloadMedia(ctx, tc.m.Attachment())
			if err != nil || string(got) != string(tc.data) || tc.m.Text() != tc.caption {
				t.Errorf("the phone got %q captioned %q (%d bytes, %v), want caption %q and the %d bytes sent", shown(tc.m.Msg), tc.m.Text(), len(got), err, tc.caption, len(tc.data))
			}
		}
	})

	t.Run("owner from the phone", func(t *testing.T) {
		if _, err := rr.ann.SendText(ctx, rr.bob.PN, "sent from my phone"); err != nil {
			t.Fatal(err)
		}
		f := rr.event(t, "bob")
		if e := f.Event; e.Text != "sent from my phone" || e.Sender == nil || !e.Sender.IsOwner || e.Sender.ID != rr.ann.PN.String() {
			t.Errorf("the API got %+v from %+v, want the owner's message in Bob's chat", e, e.Sender)
		}
	})

	// A route naming a WhatsApp group waits for the group list, then
	// relays both ways.
	t.Run("group by name", func(t *testing.T) {
		// The API's chat has no destination until "Family" resolves, which
		// happens once the link loaded its groups and the core resolved the
		// routes again, in the background: retry until it has.
		deadline := time.Now().Add(waitBound)
		for n := 0; ; n++ {
			f := rr.send(t, daemontest.WireEvent{ID: fmt.Sprintf("fam-%d", n), Kind: "message", Chat: "family", Sender: apiCarol, Text: "dinner at 8"})
			if f.Type == "ack" {
				break
			}
			if f.Code != "no_route" || time.Now().After(deadline) {
				t.Fatalf("send to family: %+v, want an ack once the group resolves", f)
			}
			time.Sleep(20 * time.Millisecond)
		}
		for _, p := range []*fakewa.Phone{rr.bob, rr.eve} {
			m := rr.phoneGets(t, p, "Carol's message in Family", func(m fakewa.Message) bool { return m.Text() == "*Carol*: dinner at 8" })
			if m.Chat != rr.family.JID {
				t.Errorf("%s's phone got it in %s, want Family", p.PushName, m.Chat)
			}
		}

		if _, err := rr.eve.SendText(ctx, rr.family.JID, "on my way"); err != nil {
			t.Fatal(err)
		}
		f := rr.event(t, "family")
		if f.Event.Text != "on my way" || f.Event.Sender.Name != "Eve" || f.Event.Sender.ID != rr.eve.PN.String() {
			t.Errorf("the API got %+v %+v, want Eve's message in family", f, f.Event)
		}
	})

	// Last: it ends the link. The phone removing the device posts the
	// notice to the configured notices chat, through the real core.
	t.Run("logout notice", func(t *testing.T) {
		if err := rr.ann.RemoveCompanion(companionOf(t, rr.ann)); err != nil {
			t.Fatal(err)
		}
		f := rr.event(t, "notices")
		want := "WhatsApp link 'me' was logged out from the phone — run `phonebridge link me`"
		if f.Event.Text != want {
			t.Errorf("the API got %+v %+v, want the notice %q", f, f.Event, want)
		}
		if st := rr.b.Links(); len(st) != 1 || st[0].State != bridge.LinkLoggedOut {
			t.Errorf("links %+v, want me logged out", st)
		}
	})
}

// TestReceive: what phones send reaches the core as neutral events: text
// and its formatting, attachments the connector can download again, replies,
// edits, deletes and reactions, the owner's own messages from the phone,
// group messages with their senders' names.
func TestReceive(t *testing.T) {
	lw := newLinkedWorld(t, fakewa.Options{}, nil)
	ann, family := lw.ann.PN, lw.family.JID

	t.Run("text and formatting", func(t *testing.T) {
		ev := lw.says(t, lw.bob, ann, "*bold* _it_ ~gone~ `x` and ```mono```")
		want := bridge.Event{
			Kind: bridge.KindMessage, ID: ev.ID, Time: ev.Time,
			Chat:   bridge.ChatRef{ID: bobChat, Name: "Bob", Direct: true},
			Sender: bridge.Sender{ID: bobChat, Name: "Bob"},
			Text:   "*bold* _it_ ~gone~ `x` and ```mono```",
			HTML:   "<b>bold</b> <i>it</i> <s>gone</s> <code>x</code> and <code>mono</code>",
		}
		if !eventIs(ev, want) {
			t.Errorf("relayed %+v, want %+v", ev, want)
		}
		if time.Since(ev.Time) > time.Minute {
			t.Errorf("the event's time %v is not the message's", ev.Time)
		}
	})

	t.Run("media", func(t *testing.T) {
		for _, tc := range []struct {
			name      string
			mediaType whatsmeow.MediaType
			msg       func(mi fakewa.MediaInfo) *waE2E.Message
			mime      string
			file      string
			caption   string
		}{
			{"image", whatsmeow.MediaImage, func(mi fakewa.MediaInfo) *waE2E.Message {
				return &waE2E.Message{ImageMessage: mi.Image("image/jpeg", "the beach")}
			}, "image/jpeg", "image.jpg", "the beach"},
			{"document", whatsmeow.MediaDocument, func(mi fakewa.MediaInfo) *waE2E.Message {
				return &waE2E.Message{DocumentMessage: mi.Document("application/pdf", "report.pdf", "the numbers")}
			}, "application/pdf", "report.pdf", "the numbers"},
			{"voice note", whatsmeow.MediaAudio, func(mi fakewa.MediaInfo) *waE2E.Message {
				return &waE2E.Message{AudioMessage: mi.Audio("audio/ogg; codecs=opus", true)}
			}, "audio/ogg; codecs=opus", "voice.ogg", ""},
			{"video", whatsmeow.MediaVideo, func(mi fakewa.MediaInfo) *waE2E.Message {
				return &waE2E.Message{VideoMessage: mi.Video("video/mp4", "a clip")}
			}, "video/mp4", "video.mp4", "a clip"},
			{"sticker", whatsmeow.MediaImage, func(mi fakewa.MediaInfo) *waE2E.Message {
				return &waE2E.Message{StickerMessage: mi.Sticker("image/webp")}
			}, "image/webp", "sticker.webp", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				data := fileBytes(tc.name)
				mi, err := lw.srv.EncryptMedia(data, tc.mediaType)
				if err != nil {
					t.Fatal(err)
				}
				ev := lw.fromPhone(t, lw.bob, ann, tc.msg(mi))
				if len(ev.Media) != 1 {
					t.Fatalf("relayed %+v, want one attachment", ev)
				}
				m := ev.Media[0]
				if m.MIME != tc.mime || m.Name != tc.file || m.Caption != tc.caption || ev.Text != tc.caption || m.Size != int64(len(data)) {
					t.Errorf("relayed %+v with text %q, want %s %s captioned %q", m, ev.Text, tc.mime, tc.file, tc.caption)
				}
				got, err := openAll(ctxFor(t), lw.c, m)
				if err != nil || string(got) != string(data) {
					t.Errorf("OpenMedia read %d bytes (%v), want the %d the phone sent", len(got), err, len(data))
				}
			})
		}

		// An attachment WhatsApp no longer has, or a damaged reference,
		// fails for good.
		data := fileBytes("gone")
		mi, _ := lw.srv.EncryptMedia(data, whatsmeow.MediaImage)
		ev := lw.fromPhone(t, lw.bob, ann, &waE2E.Message{ImageMessage: mi.Image("image/jpeg", "")})
		if err := lw.srv.DeleteMedia(mi.DirectPath); err != nil {
			t.Fatal(err)
		}
		if _, err := lw.c.OpenMedia(ctxFor(t), ev.Media[0]); !bridge.IsPermanent(err) {
			t.Errorf("an attachment WhatsApp deleted: %v, want a permanent error", err)
		}
		damaged := ev.Media[0]
		damaged.Ref = "{not json"
		if _, err := lw.c.OpenMedia(ctxFor(t), damaged); !bridge.IsPermanent(err) {
			t.Errorf("a damaged reference: %v, want a permanent error", err)
		}
	})

	t.Run("voice notes, stickers, GIFs and places as WhatsApp shows them", func(t *testing.T) {
		voice, _ := lw.srv.EncryptMedia(fileBytes("a voice note"), whatsmeow.MediaAudio)
		am := voice.Audio("audio/ogg; codecs=opus", true)
		am.Seconds, am.Waveform = proto.Uint32(7), append(bytes.Repeat([]byte{0}, 32), bytes.Repeat([]byte{100}, 32)...)
		ev := lw.fromPhone(t, lw.bob, ann, &waE2E.Message{AudioMessage: am})
		if m := ev.Media[0]; m.Kind != bridge.MediaVoice || m.DurationMS != 7000 || len(m.Waveform) != 64 || m.Waveform[0] != 0 || m.Waveform[63] != 1024 {
			t.Errorf("a voice note relayed as %s of %d ms, waveform %v", m.Kind, m.DurationMS, m.Waveform)
		}
		sticker, _ := lw.srv.EncryptMedia(fileBytes("a sticker"), whatsmeow.MediaImage)
		sm := sticker.Sticker("image/webp")
		sm.Width, sm.Height = proto.Uint32(512), proto.Uint32(512)
		ev = lw.fromPhone(t, lw.bob, ann, &waE2E.Message{StickerMessage: sm})
		if m := ev.Media[0]; m.Kind != bridge.MediaSticker || m.Width != 512 || m.Height != 512 {
			t.Errorf("a sticker relayed as %+v", m)
		}
		gif, _ := lw.srv.EncryptMedia(fileBytes("a gif"), whatsmeow.MediaVideo)
		vm := gif.Video("video/mp4", "")
		vm.GifPlayback = proto.Bool(true)
		ev = lw.fromPhone(t, lw.bob, ann, &waE2E.Message{VideoMessage: vm})
		if m := ev.Media[0]; m.Kind != bridge.MediaGIF {
			t.Errorf("a GIF relayed as %+v", m)
		}
		ev = lw.fromPhone(t, lw.bob, ann, &waE2E.Message{PollCreationMessageV3: &waE2E.PollCreationMessage{
			Name:    proto.String("Dinner?"),
			Options: []*waE2E.PollCreationMessage_Option{{OptionName: proto.String("7")}, {OptionName: proto.String("8")}},
		}, MessageContextInfo: &waE2E.MessageContextInfo{MessageSecret: bytes.Repeat([]byte{7}, 32)}})
		if p := ev.Poll; p == nil || p.Question != "Dinner?" || !slices.Equal(p.Options, []string{"7", "8"}) || p.Choices != 0 || ev.Text != "" {
			t.Errorf("a poll relayed as %+v with text %q", ev.Poll, ev.Text)
		}
		ev = lw.fromPhone(t, lw.bob, ann, &waE2E.Message{LocationMessage: &waE2E.LocationMessage{
			DegreesLatitude: proto.Float64(52.5163), DegreesLongitude: proto.Float64(13.3777),
			Name: proto.String("Brandenburger Tor"), Comment: proto.String("here at 8"),
		}})
		if l := ev.Location; l == nil || l.Latitude != 52.5163 || l.Longitude != 13.3777 || l.Name != "Brandenburger Tor" || ev.Text != "here at 8" {
			t.Errorf("a place relayed as %+v with text %q", ev.Location, ev.Text)
		}
	})

	t.Run("reply edit delete react", func(t *testing.T) {
		first := lw.says(t, lw.bob, ann, "first words")
		key := &waCommon.MessageKey{RemoteJID: proto.String(ann.String()), FromMe: proto.Bool(true), ID: proto.String(first.ID)}

		reply := lw.fromPhone(t, lw.bob, ann, &waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{
			Text:        proto.String("and more"),
			ContextInfo: &waE2E.ContextInfo{StanzaID: proto.String(first.ID), Participant: proto.String(bobChat), QuotedMessage: &waE2E.Message{Conversation: proto.String("first words")}},
		}})
		if reply.Kind != bridge.KindMessage || reply.ReplyTo != first.ID || reply.Text != "and more" {
			t.Errorf("a reply relayed as %+v, want one to %s", reply, first.ID)
		}

		edit := lw.fromPhone(t, lw.bob, ann, &waE2E.Message{EditedMessage: &waE2E.FutureProofMessage{Message: &waE2E.Message{
			ProtocolMessage: &waE2E.ProtocolMessage{Key: key, Type: waE2E.ProtocolMessage_MESSAGE_EDIT.Enum(),
				EditedMessage: &waE2E.Message{Conversation: proto.String("first *words*, edited")}, TimestampMS: proto.Int64(time.Now().UnixMilli())},
		}}})
		if edit.Kind != bridge.KindEdit || edit.Target != first.ID || edit.Text != "first *words*, edited" || edit.HTML != "first <b>words</b>, edited" {
			t.Errorf("an edit relayed as %+v, want an edit of %s", edit, first.ID)
		}

		for _, emoji := range []string{"❤️", ""} {
			r := lw.fromPhone(t, lw.bob, ann, &waE2E.Message{ReactionMessage: &waE2E.ReactionMessage{
				Key: key, Text: proto.String(emoji), SenderTimestampMS: proto.Int64(time.Now().UnixMilli()),
			}})
			kind := bridge.KindReaction
			if emoji == "" {
				kind = bridge.KindReactionRemove
			}
			if r.Kind != kind || r.Target != first.ID || r.Emoji != emoji || r.Sender.ID != bobChat {
				t.Errorf("a reaction %q relayed as %+v, want %s on %s", emoji, r, kind, first.ID)
			}
		}

		del := lw.fromPhone(t, lw.bob, ann, &waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{Key: key, Type: waE2E.ProtocolMessage_REVOKE.Enum()}})
		if del.Kind != bridge.KindDelete || del.Target != first.ID || del.Sender.ID != bobChat {
			t.Errorf("a delete relayed as %+v, want a delete of %s", del, first.ID)
		}
	})

	// What the owner sends from the phone comes as the owner's, in the
	// chat it went to.
	t.Run("owner from the phone", func(t *testing.T) {
		for _, chat := range []types.JID{lw.bob.PN, family} {
			ev := lw.says(t, lw.ann, chat, "from my phone to "+chat.User)
			if ev.Chat.ID != chat.String() || !ev.Sender.IsOwner || ev.Sender.ID != ann.String() {
				t.Errorf("the owner's message to %s relayed as %+v, want the owner's in that chat", chat, ev)
			}
		}
	})

	t.Run("group", func(t *testing.T) {
		for _, p := range []*fakewa.Phone{lw.eve, lw.bob} {
			ev := lw.says(t, p, family, "hello from "+p.PushName)
			if ev.Chat != (bridge.ChatRef{ID: family.String(), Name: "Family"}) || ev.Sender != (bridge.Sender{ID: p.PN.String(), Name: p.PushName}) {
				t.Errorf("%s's group message relayed in %+v from %+v, want Family and %s", p.PushName, ev.Chat, ev.Sender, p.PushName)
			}
		}
	})

	// Status updates (stories) are not relayed unless status_broadcasts
	// says so, and are acknowledged all the same, so WhatsApp does not
	// deliver them again.
	t.Run("status updates", func(t *testing.T) {
		dev := *lw.c.dev().ID
		evs := lw.watch()
		id, err := lw.bob.PostStatus(ctxFor(t), &waE2E.Message{Conversation: proto.String("my story")}, lw.ann)
		if err != nil {
			t.Fatal(err)
		}
		evs.wait(t, "the status update", func(e any) bool { m, ok := e.(*events.Message); return ok && m.Info.ID == id })
		waitUntil(t, "the status update's receipt", func() bool { return !slices.Contains(lw.srv.PendingIDs(dev), id) })
		after := lw.says(t, lw.bob, ann, "after my story")
		for _, ev := range lw.s.eventList() {
			if ev.ID == id || ev.Chat.ID == types.StatusBroadcastJID.String() {
				t.Errorf("relayed %+v (before %s), want status updates ignored", ev, after.ID)
			}
		}
	})

	// A message no route wants is acknowledged all the same: WhatsApp must
	// not deliver it again and again.
	t.Run("no route", func(t *testing.T) {
		dev := *lw.c.dev().ID
		lw.s.update(func() { lw.s.refuse = fmt.Errorf("%w: %q", bridge.ErrNoRoute, bobChat) })
		defer lw.s.update(func() { lw.s.refuse = nil })
		id, _ := lw.bob.SendText(ctxFor(t), ann, "nobody wants this")
		lw.s.waitFor(t, "the message to be offered", func() bool {
			return slices.ContainsFunc(lw.s.refused, func(ev bridge.Event) bool { return ev.ID == id })
		})
		waitUntil(t, "the message's receipt", func() bool { return !slices.Contains(lw.srv.PendingIDs(dev), id) })
	})
}

// eventIs compares the parts of events a test names.
func eventIs(got, want bridge.Event) bool {
	return got.Kind == want.Kind && got.ID == want.ID && got.Chat == want.Chat && got.Sender == want.Sender &&
		got.Text == want.Text && got.HTML == want.HTML && got.ReplyTo == want.ReplyTo && got.Target == want.Target
}

// openAll reads an attachment through the connector.
func openAll(ctx context.Context, c *Connector, m bridge.Media) ([]byte, error) {
	rc, err := c.OpenMedia(ctx, m)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// TestStatusBroadcastsRelayed: with status_broadcasts on, status updates
// (stories) are relayed, from the status chat; TestReceive has them
// ignored by default.
func TestStatusBroadcastsRelayed(t *testing.T) {
	opts := rigOptions()
	opts.StatusBroadcasts = true
	lw := newLinkedWorld(t, fakewa.Options{}, opts)
	id, err := lw.bob.PostStatus(ctxFor(t), &waE2E.Message{Conversation: proto.String("my story")}, lw.ann)
	if err != nil {
		t.Fatal(err)
	}
	ev := lw.s.waitEvent(t, "the status update", func(ev bridge.Event) bool { return ev.ID == id })
	if ev.Chat.ID != types.StatusBroadcastJID.String() || ev.Sender.ID != bobChat || ev.Text != "my story" {
		t.Errorf("the status update relayed as %+v, want Bob's in the status chat", ev)
	}
}

// TestReceiveByLID: WhatsApp addresses people by LID today, with their
// phone number beside it. Chats and senders keep the phone number where
// WhatsApp gives it, so that routes naming a person's number, replies,
// edits and reactions to earlier messages, and the chat list go on
// working as WhatsApp moves a chat from numbers to LIDs.
func TestReceiveByLID(t *testing.T) {
	lw := newLinkedWorldWith(t, fakewa.Options{LIDAddressing: true}, nil, func(w *waWorld) {
		if err := w.ann.SetPushName(context.Background(), "Ann"); err != nil {
			t.Fatal(err)
		}
	})
	waitUntil(t, "the account's name", func() bool { return lw.c.LinkStatus().Account.Name == "Ann" })
	ann, family := lw.ann.PN, lw.family.JID
	bob := lw.bob.PN

	said := lw.says(t, lw.bob, ann, "hello by LID")
	if said.Chat != (bridge.ChatRef{ID: bobChat, Name: "Bob", Direct: true}) || said.Sender != (bridge.Sender{ID: bobChat, Name: "Bob"}) {
		t.Errorf("Bob's message by LID relayed in %+v from %+v, want his chat and him by number", said.Chat, said.Sender)
	}
	// A route naming Bob by his LID names the same chat.
	if got, err := lw.c.ResolveChat(ctxFor(t), lw.bob.LID.String()); err != nil || got != bobChat {
		t.Errorf("ResolveChat(Bob's LID) = %q, %v; want his chat by number", got, err)
	}
	inGroup := lw.says(t, lw.eve, family, "hello family by LID")
	if inGroup.Sender != (bridge.Sender{ID: lw.eve.PN.String(), Name: "Eve"}) {
		t.Errorf("Eve's group message by LID relayed from %+v, want her by number", inGroup.Sender)
	}
	own := lw.says(t, lw.ann, lw.bob.LID, "from my phone, by LID")
	if own.Chat.ID != bobChat || own.Sender != (bridge.Sender{ID: ann.String(), Name: "Ann", IsOwner: true}) {
		t.Errorf("the owner's message by LID relayed in %+v from %+v, want Bob's chat and the owner by number", own.Chat, own.Sender)
	}

	// A reply and a reaction to the message, through the chat as routes
	// name it, find it.
	out := fromCarol(bridge.KindMessage, bob, "pb.lid.reply")
	out.Text, out.ReplyTo = "got it", said.ID
	lw.send(t, out)
	if ci := contextOf(lw.got(t, lw.bob, bob, "pb.lid.reply", 1)[0].Msg); ci.GetStanzaID() != said.ID {
		t.Errorf("the reply reached the phone with context %v, want it quoting %s", ci, said.ID)
	}
	react := fromCarol(bridge.KindReaction, bob, "pb.lid.react")
	react.Target, react.Emoji = said.ID, "👍"
	lw.send(t, react)
	if rm := lw.got(t, lw.bob, bob, "pb.lid.react", 1)[0].Msg.GetReactionMessage(); rm.GetKey().GetID() != said.ID {
		t.Errorf("the reaction reached the phone as %v, want it on %s", rm, said.ID)
	}

	// The chat list has each person once, by number.
	chats, err := lw.c.Chats(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range chats {
		if strings.HasSuffix(ch.ID, "@lid") {
			t.Errorf("Chats lists %+v by LID, want people by number", ch)
		}
	}
	if !slices.Contains(chats, bridge.ChatInfo{ID: bobChat, Name: "Bob"}) {
		t.Errorf("Chats lists %+v, want Bob by number", chats)
	}
}
