package matrix

import (
	"bytes"
	"cmp"
	"fmt"
	"image"
	"image/jpeg"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/bridgetest"
	"github.com/phonebridge/phonebridge/config"
	"github.com/phonebridge/phonebridge/internal/daemontest"
	"github.com/phonebridge/phonebridge/internal/testservers"
)

// TestKindsOnDendrite carries voice notes, stickers, GIFs, sized images
// and places both ways between a fake platform and a real homeserver, in
// bot mode and in appservice mode: Matrix clients see them as Element
// shows them, and the platform gets them as their kinds.
func TestKindsOnDendrite(t *testing.T) {
	dir := t.TempDir()
	regPath := filepath.Join(dir, "registration.yaml")
	asOpts := NewOptions()
	asOpts.Domain, asOpts.Owner = "localhost", "@owner:localhost"
	asOpts.Listen = fmt.Sprintf("127.0.0.1:%d", daemontest.FreePort(t))
	if _, err := WriteRegistration("mx", asOpts, regPath); err != nil {
		t.Fatal(err)
	}
	hs := testservers.StartDendrite(t, testservers.DendriteOptions{AppServiceFiles: []string{regPath}})
	owner := newHuman(t, hs, "owner", "The Owner")

	t.Run("Bot", func(t *testing.T) {
		botID, _ := hs.Register(t, "kindsbot", botPassword, false)
		room, err := owner.cli.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Kinds"})
		if err != nil {
			t.Fatal(err)
		}
		o := NewOptions()
		o.Mode, o.Homeserver, o.Domain, o.UserID, o.Password = ModeBot, hs.URL(), "localhost", botID, botPassword
		o.SyncTimeout = 2 * time.Second
		c, src := startKindsCore(t, o, bridgetest.Route("r", "src/general", "mx/"+string(room.RoomID)))
		waitFor(t, "the bot to join the room", func() bool {
			resp, err := owner.cli.JoinedMembers(t.Context(), room.RoomID)
			if err != nil {
				return false
			}
			_, in := resp.Joined[id.UserID(botID)]
			return in
		})
		k := &kindsSide{src: src, c: c, chat: bridge.ChatRef{Connector: "src", ID: "general"}, room: room.RoomID,
			speaker: id.UserID(botID), owner: owner, prefix: "Carol: "}
		k.relayBothWays(t)
	})

	t.Run("Appservice", func(t *testing.T) {
		o := *asOpts
		o.Mode, o.Homeserver, o.Registration = ModeAppservice, hs.URL(), regPath
		c, src := startKindsCore(t, &o, bridgetest.Route("all", "src/*", "mx/*"))
		chat := bridge.ChatRef{Connector: "src", ID: annChat, Name: "Ann"}
		k := &kindsSide{src: src, c: c, chat: chat, speaker: c.as.ghostID("carol"), owner: owner}
		// The first message makes the portal, which the owner joins.
		k.inject(t, bridge.Event{ID: "k-hello", Text: "hello"})
		waitFor(t, "the portal", func() bool {
			k.room, _ = c.as.portalRoom(t.Context(), chat)
			return k.room != ""
		})
		if _, err := owner.cli.JoinRoomByID(t.Context(), k.room); err != nil {
			t.Fatalf("the owner cannot join the portal: %v", err)
		}
		if hello := k.next(t, "the first message", event.EventMessage); hello.Content.AsMessage().Body != "hello" {
			t.Fatalf("the portal's first message is %v", hello.Content.Raw)
		}
		k.relayBothWays(t)

		// History keeps its time, a sticker's too.
		sent := time.Date(2025, 3, 1, 12, 30, 0, 0, time.UTC)
		src.SetMedia("old-sticker", string(grayPNG(t, 8)))
		k.inject(t, bridge.Event{ID: "k-old", History: true, Time: sent,
			Media: []bridge.Media{{MIME: "image/png", Name: "old", Ref: "old-sticker", Kind: bridge.MediaSticker, Width: 8, Height: 8}}})
		old := k.next(t, "the sticker from history", event.EventSticker)
		if old.Timestamp != sent.UnixMilli() || old.Content.AsMessage().Body != "old" {
			t.Errorf("the sticker from history is dated %v with body %q, want %v", time.UnixMilli(old.Timestamp).UTC(), old.Content.AsMessage().Body, sent)
		}

		// Mentions: the platform's become pills to the owner and to the
		// ghost of the person named; the owner's pills name the owner and
		// the person the ghost speaks for.
		k.inject(t, bridge.Event{ID: "k-mention", Text: "@Ann <3 and @Dan",
			Mentions: []bridge.Mention{{Owner: true, Name: "Ann", Text: "@Ann"}, {ID: "dan", Name: "Dan", Text: "@Dan"}}})
		pills := k.next(t, "the mentions", event.EventMessage).Content.AsMessage()
		dan := c.as.ghostID("dan")
		if !strings.Contains(pills.FormattedBody, `href="https://matrix.to/#/@owner:localhost">@Ann</a> &lt;3`) ||
			!strings.Contains(pills.FormattedBody, `href="https://matrix.to/#/`+string(dan)+`">@Dan</a>`) ||
			pills.Mentions == nil || !pills.Mentions.Has("@owner:localhost") || !pills.Mentions.Has(dan) {
			t.Errorf("the mentions reached Matrix as %q, mentioning %+v", pills.FormattedBody, pills.Mentions)
		}
		k.ownerSays(t, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "Dan (WhatsApp): look, The Owner",
			"format": "org.matrix.custom.html", "formatted_body": `<a href="https://matrix.to/#/` + string(dan) + `">Dan (WhatsApp)</a>: look, <a href="matrix:u/owner:localhost">The Owner</a>`})
		out, _ := k.received(t)
		want := []bridge.Mention{{ID: "dan", Name: "Dan (WhatsApp)", Text: "Dan (WhatsApp)"}, {Owner: true, Name: "The Owner", Text: "The Owner"}}
		if !reflect.DeepEqual(out.Mentions, want) {
			t.Errorf("the owner's pills came as %+v, want %+v", out.Mentions, want)
		}
	})
}

// startKindsCore runs the real core between a fake platform "src" that
// takes media and places and a matrix connector "mx" on o, started, and
// waits for it to be connected.
func startKindsCore(t *testing.T, o *Options, routes ...config.Route) (*Connector, *bridgetest.Fake) {
	t.Helper()
	store := openTestStore(t)
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("MATRIX_TEST_SHOW_LOGS") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := New(bridge.Env{Name: "mx", Logger: log, Store: store}, o)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.Delivery.RetryMin = 20 * time.Millisecond
	cfg.Delivery.RetryMax = 300 * time.Millisecond
	cfg.Delivery.SendTimeout = 10 * time.Second
	cfg.Routes = routes
	caps := bridgetest.AllCaps
	caps.Locations, caps.Polls = true, true
	src := bridgetest.NewFake("src", caps)
	b := runCore(t, c, src, &cfg)
	waitFor(t, "the matrix connector to be connected", func() bool { return b.Status()["mx"].State == bridge.StateConnected })
	return c, src
}

// kindsSide is one mode's bridge as the scenario drives it: src speaks in
// chat, which is room on Matrix, where the owner reads what speaker says.
type kindsSide struct {
	src     *bridgetest.Fake
	c       *Connector
	chat    bridge.ChatRef
	room    id.RoomID
	speaker id.UserID
	owner   *human
	prefix  string // the sender's name in front, in bot mode
	// got counts what src was sent, to wait for the next.
	got int
}

// inject submits ev from Carol in the fake platform's chat.
func (k *kindsSide) inject(t *testing.T, ev bridge.Event) {
	t.Helper()
	ev.Kind = cmp.Or(ev.Kind, bridge.KindMessage)
	ev.Chat = k.chat
	ev.Sender = bridge.Sender{ID: "carol", Name: "Carol"}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if err := k.src.Inject(t.Context(), ev); err != nil {
		t.Fatalf("inject %s: %v", ev.ID, err)
	}
}

// next waits for the speaker's next event of type typ in the room.
func (k *kindsSide) next(t *testing.T, what string, typ event.Type) *event.Event {
	t.Helper()
	return k.owner.next(t, what, func(evt *event.Event) bool {
		return evt.RoomID == k.room && evt.Sender == k.speaker && evt.Type == typ
	})
}

// ownerSays sends raw content into the room as the owner.
func (k *kindsSide) ownerSays(t *testing.T, typ event.Type, content map[string]any) id.EventID {
	t.Helper()
	resp, err := k.owner.cli.SendMessageEvent(t.Context(), k.room, typ, content)
	if err != nil {
		t.Fatal(err)
	}
	return resp.EventID
}

// ownerLocation shares a place as the owner and waits for src to get it.
func (k *kindsSide) ownerLocation(t *testing.T) id.EventID {
	t.Helper()
	evt := k.ownerSays(t, event.EventMessage, map[string]any{"msgtype": "m.location", "body": "here", "geo_uri": "geo:1,2"})
	if out, _ := k.received(t); out.Location == nil {
		t.Fatalf("the owner's place reached src as %+v", out.Event)
	}
	return evt
}

// upload puts data in the content repository as the owner.
func (k *kindsSide) upload(t *testing.T, data []byte, mime, name string) string {
	t.Helper()
	up, err := k.owner.cli.UploadBytesWithName(t.Context(), data, mime, name)
	if err != nil {
		t.Fatal(err)
	}
	return string(up.ContentURI.CUString())
}

// received waits for what the owner said to reach src, and returns it
// with the bytes src read of its attachment.
func (k *kindsSide) received(t *testing.T) (bridge.Outgoing, string) {
	t.Helper()
	k.got++
	out := k.src.WaitSent(t, k.got)[k.got-1]
	if out.Chat.ID != k.chat.ID || out.Sender.ID != string(k.owner.id) {
		t.Errorf("src got %+v from %+v in %s, want the owner's in %s", out.Kind, out.Sender, out.Chat.ID, k.chat.ID)
	}
	return out, k.src.MediaBytes(fmt.Sprintf("src-%d", k.got))
}

func (k *kindsSide) relayBothWays(t *testing.T) {
	info := func(evt *event.Event) map[string]any { i, _ := evt.Content.Raw["info"].(map[string]any); return i }
	download := func(evt *event.Event) []byte {
		t.Helper()
		return downloadURI(t, k.owner, evt.Content.AsMessage().URL)
	}

	// The platform → Matrix.
	voiceBytes := []byte("OggS a voice note")
	k.src.SetMedia("voice", string(voiceBytes))
	k.inject(t, bridge.Event{ID: "k-voice", Media: []bridge.Media{{MIME: "audio/ogg", Ref: "voice", Kind: bridge.MediaVoice,
		DurationMS: 4200, Waveform: []int{0, 256, 1024, 512, 3}}}})
	voice := k.next(t, "the voice note", event.EventMessage)
	vm := voice.Content.AsMessage()
	audio, _ := voice.Content.Raw["org.matrix.msc1767.audio"].(map[string]any)
	if _, flagged := voice.Content.Raw["org.matrix.msc3245.voice"]; !flagged || vm.MsgType != event.MsgAudio ||
		vm.Info == nil || vm.Info.Duration != 4200 || vm.Info.MimeType != "audio/ogg" ||
		audio["duration"] != 4200.0 || fmt.Sprint(audio["waveform"]) != "[0 256 1024 512 3]" {
		t.Errorf("the voice note arrived as %s %v", voice.Type.Type, voice.Content.Raw)
	}
	if got := download(voice); !bytes.Equal(got, voiceBytes) {
		t.Errorf("the voice note's file is %q", got)
	}

	stickerPNG := grayPNG(t, 64)
	k.src.SetMedia("sticker", string(stickerPNG))
	k.inject(t, bridge.Event{ID: "k-sticker", ReplyTo: "k-voice", Media: []bridge.Media{{MIME: "image/png", Name: "party", Ref: "sticker",
		Kind: bridge.MediaSticker, Width: 64, Height: 64}}})
	sticker := k.next(t, "the sticker", event.EventSticker)
	sm := sticker.Content.AsMessage()
	if sm.MsgType != "" || sm.Body != k.prefix+"party" || sm.URL == "" || sm.Info == nil || sm.Info.MimeType != "image/png" ||
		sm.Info.Width != 64 || sm.Info.Height != 64 || sm.RelatesTo.GetReplyTo() != voice.ID {
		t.Errorf("the sticker arrived as %v", sticker.Content.Raw)
	}
	if got := download(sticker); !bytes.Equal(got, stickerPNG) {
		t.Errorf("the sticker's file is %d bytes, want the %d sent", len(got), len(stickerPNG))
	}

	k.src.SetMedia("gif", "not really an mp4")
	k.inject(t, bridge.Event{ID: "k-gif", Text: "so funny", Media: []bridge.Media{{MIME: "video/mp4", Ref: "gif", Kind: bridge.MediaGIF,
		Width: 320, Height: 240, DurationMS: 1500}}})
	gif := k.next(t, "the GIF", event.EventMessage)
	gm := gif.Content.AsMessage()
	if gm.MsgType != event.MsgVideo || gm.Body != k.prefix+"so funny" || gm.Info == nil || gm.Info.Width != 320 || gm.Info.Height != 240 || gm.Info.Duration != 1500 {
		t.Errorf("the GIF arrived as %v", gif.Content.Raw)
	}
	for _, flag := range []string{"fi.mau.gif", "fi.mau.loop", "fi.mau.autoplay", "fi.mau.hide_controls", "fi.mau.no_audio"} {
		if info(gif)[flag] != true {
			t.Errorf("the GIF's info.%s is %v, want true", flag, info(gif)[flag])
		}
	}

	square := grayPNG(t, 16)
	k.src.SetMedia("square", string(square))
	var preview bytes.Buffer
	if err := jpeg.Encode(&preview, image.NewGray(image.Rect(0, 0, 4, 4)), nil); err != nil {
		t.Fatal(err)
	}
	k.inject(t, bridge.Event{ID: "k-image", Media: []bridge.Media{{MIME: "image/png", Name: "square.png", Ref: "square", Width: 16, Height: 16, Thumbnail: preview.Bytes()}}})
	img := k.next(t, "the image", event.EventMessage)
	im := img.Content.AsMessage()
	if im.MsgType != event.MsgImage || im.Info == nil || im.Info.Width != 16 || im.Info.Height != 16 || info(img)["fi.mau.gif"] != nil {
		t.Errorf("the image arrived as %v", img.Content.Raw)
	}
	// Its preview is in the content repository for clients to show first.
	if im.Info == nil || im.Info.ThumbnailInfo == nil || im.Info.ThumbnailInfo.MimeType != "image/jpeg" || im.Info.ThumbnailInfo.Width != 4 ||
		!bytes.Equal(downloadURI(t, k.owner, im.Info.ThumbnailURL), preview.Bytes()) {
		t.Errorf("the image's preview arrived as %+v", im.Info)
	}

	k.inject(t, bridge.Event{ID: "k-place", Text: "meet here", ReplyTo: "k-sticker",
		Location: &bridge.Location{Latitude: 51.5007, Longitude: -0.1246, Name: "Big Ben", Address: "London SW1A 0AA"}})
	place := k.next(t, "the place", event.EventMessage)
	pm := place.Content.AsMessage()
	loc, _ := place.Content.Raw["org.matrix.msc3488.location"].(map[string]any)
	asset, _ := place.Content.Raw["org.matrix.msc3488.asset"].(map[string]any)
	wantBody := k.prefix + "📍 Location: Big Ben\nLondon SW1A 0AA\nmeet here\ngeo:51.5007,-0.1246"
	if pm.MsgType != event.MsgLocation || pm.GeoURI != "geo:51.5007,-0.1246" || pm.Body != wantBody ||
		loc["uri"] != pm.GeoURI || loc["description"] != "Big Ben" || asset["type"] != "m.pin" || pm.RelatesTo.GetReplyTo() != sticker.ID {
		t.Errorf("the place arrived as %v", place.Content.Raw)
	}

	// A live location moves: an edit whose new content is the new place.
	k.inject(t, bridge.Event{ID: "k-live", Location: &bridge.Location{Latitude: 10, Longitude: 20, Live: true}})
	live := k.next(t, "the live location", event.EventMessage)
	k.inject(t, bridge.Event{Kind: bridge.KindEdit, ID: "k-live.1", Target: "k-live", Location: &bridge.Location{Latitude: 10.5, Longitude: 20.25, Live: true}})
	moved := k.next(t, "the move", event.EventMessage)
	rel, _ := moved.Content.Raw["m.relates_to"].(map[string]any)
	fresh, _ := moved.Content.Raw["m.new_content"].(map[string]any)
	freshLoc, _ := fresh["org.matrix.msc3488.location"].(map[string]any)
	if rel["rel_type"] != "m.replace" || rel["event_id"] != string(live.ID) || fresh["msgtype"] != "m.location" ||
		fresh["geo_uri"] != "geo:10.5,20.25" || freshLoc["uri"] != "geo:10.5,20.25" {
		t.Errorf("the move arrived as %v", moved.Content.Raw)
	}

	// The voice note's id was recorded: an edit finds it.
	k.inject(t, bridge.Event{ID: "k-edit", Kind: bridge.KindEdit, Target: "k-voice", Text: "listen to this"})
	edit := k.next(t, "the edit", event.EventMessage)
	// It changes the caption and keeps the voice note a voice note: a
	// text edit would turn it into words.
	if em := edit.Content.AsMessage(); em.RelatesTo.GetReplaceID() != voice.ID || em.NewContent == nil || em.NewContent.Body != k.prefix+"listen to this" ||
		em.NewContent.MsgType != event.MsgAudio || em.NewContent.URL != voice.Content.AsMessage().URL || em.NewContent.FileName == "" {
		t.Errorf("the edit arrived as %v, want an m.replace of the voice note %s keeping its audio", edit.Content.Raw, voice.ID)
	}
	if fresh, _ := edit.Content.Raw["m.new_content"].(map[string]any); fresh["org.matrix.msc3245.voice"] == nil {
		t.Errorf("the edited voice note lost its voice flag: %v", fresh)
	}

	// Matrix → the platform, as Element and mautrix bridges send them.
	ownVoice := []byte("OggS the owner's voice")
	k.ownerSays(t, event.EventMessage, map[string]any{"msgtype": "m.audio", "body": "Voice message", "url": k.upload(t, ownVoice, "audio/ogg", ""),
		"info":                     map[string]any{"mimetype": "audio/ogg", "size": len(ownVoice), "duration": 3100},
		"org.matrix.msc1767.audio": map[string]any{"duration": 3100, "waveform": []int{10, 1024, 300}},
		"org.matrix.msc1767.text":  "Voice message", "org.matrix.msc3245.voice": map[string]any{}})
	out, data := k.received(t)
	if len(out.Media) != 1 || data != string(ownVoice) {
		t.Fatalf("the owner's voice note reached src as %+v (file %q)", out.Event, data)
	}
	if m := out.Media[0]; m.Kind != bridge.MediaVoice || m.DurationMS != 3100 || !reflect.DeepEqual(m.Waveform, []int{10, 1024, 300}) || m.MIME != "audio/ogg" || out.Text != "" {
		t.Errorf("the owner's voice note reached src as %+v, text %q", m, out.Text)
	}

	ownSticker := grayPNG(t, 32)
	k.ownerSays(t, event.EventSticker, map[string]any{"body": "wave", "url": k.upload(t, ownSticker, "image/png", "wave.png"),
		"info": map[string]any{"mimetype": "image/png", "w": 32, "h": 32, "size": len(ownSticker)}})
	out, data = k.received(t)
	if len(out.Media) != 1 || out.Media[0].Kind != bridge.MediaSticker || out.Media[0].Width != 32 || out.Media[0].Height != 32 ||
		out.Media[0].MIME != "image/png" || data != string(ownSticker) {
		t.Errorf("the owner's sticker reached src as %+v", out.Event)
	}

	k.ownerSays(t, event.EventMessage, map[string]any{"msgtype": "m.video", "body": "dance", "filename": "dance.mp4",
		"url":  k.upload(t, []byte("mp4 bytes"), "video/mp4", "dance.mp4"),
		"info": map[string]any{"mimetype": "video/mp4", "w": 480, "h": 270, "duration": 2200, "fi.mau.gif": true, "fi.mau.loop": true}})
	out, _ = k.received(t)
	if len(out.Media) != 1 || out.Media[0].Kind != bridge.MediaGIF || out.Media[0].Width != 480 || out.Media[0].Height != 270 ||
		out.Media[0].DurationMS != 2200 || out.Text != "dance" {
		t.Errorf("the owner's GIF reached src as %+v", out.Event)
	}

	k.ownerSays(t, event.EventMessage, map[string]any{"msgtype": "m.image", "body": "photo.jpg",
		"url":  k.upload(t, []byte("jpeg bytes"), "image/jpeg", "photo.jpg"),
		"info": map[string]any{"mimetype": "image/jpeg", "w": 4032, "h": 3024}})
	out, _ = k.received(t)
	if len(out.Media) != 1 || out.Media[0].Kind != "" || out.Media[0].Width != 4032 || out.Media[0].Height != 3024 {
		t.Errorf("the owner's photo reached src as %+v", out.Event)
	}

	// Element's location, replying to the bridged sticker: the reply
	// names the sticker's id on src, and Element's made-up text is no
	// caption.
	uri := "geo:48.8584,2.2945;u=20"
	k.ownerSays(t, event.EventMessage, map[string]any{"msgtype": "m.location", "geo_uri": uri,
		"body":                        "User Location geo:48.8584,2.2945;u=20 at 2025-03-01T12:30:00.000Z",
		"org.matrix.msc3488.location": map[string]any{"uri": uri, "description": "Tour Eiffel"},
		"org.matrix.msc3488.asset":    map[string]any{"type": "m.self"}, "org.matrix.msc3488.ts": 1740832200000,
		"m.relates_to": map[string]any{"m.in_reply_to": map[string]any{"event_id": sticker.ID}}})
	out, _ = k.received(t)
	if l := out.Location; l == nil || l.Latitude != 48.8584 || l.Longitude != 2.2945 || l.Name != "Tour Eiffel" || out.Text != "" {
		t.Errorf("the owner's location reached src as %+v (location %+v)", out.Event, out.Location)
	}
	if out.ReplyTo != "k-sticker" {
		t.Errorf("the location replies to %q, want src's id of the sticker, k-sticker", out.ReplyTo)
	}

	// The owner's live location moves (as bridges that carry live
	// locations show it): an edit with the new place reaches src.
	k.ownerSays(t, event.EventMessage, map[string]any{"msgtype": "m.location", "body": "* here now", "geo_uri": "geo:1.5,2.5",
		"m.new_content": map[string]any{"msgtype": "m.location", "body": "here now", "geo_uri": "geo:1.5,2.5"},
		"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": string(k.ownerLocation(t))}})
	out, _ = k.received(t)
	if l := out.Location; out.Kind != bridge.KindEdit || l == nil || l.Latitude != 1.5 || l.Longitude != 2.5 || !l.Live || out.Target != fmt.Sprintf("src-%d", k.got-1) {
		t.Errorf("the owner's move reached src as %s on %q at %+v", out.Kind, out.Target, out.Location)
	}

	// A geo URI off Earth stays text.
	k.ownerSays(t, event.EventMessage, map[string]any{"msgtype": "m.location", "body": "nowhere", "geo_uri": "geo:200,0"})
	out, _ = k.received(t)
	if out.Location != nil || out.Text != "nowhere geo:200,0" {
		t.Errorf("a location off Earth reached src as %+v (location %+v), want text", out.Event, out.Location)
	}
	if !k.c.Capabilities().Locations {
		t.Error("the connector does not say it shows places")
	}

	// Polls both ways, as MSC3381 poll start events.
	k.inject(t, bridge.Event{ID: "k-poll", Poll: &bridge.Poll{Question: "Lunch?", Options: []string{"Pizza", "Sushi"}, Choices: 1}})
	ps := k.next(t, "the poll", event.EventUnstablePollStart)
	start, _ := ps.Content.Raw["org.matrix.msc3381.poll.start"].(map[string]any)
	answers, _ := start["answers"].([]any)
	question, _ := start["question"].(map[string]any)
	if len(answers) != 2 || start["max_selections"] != float64(1) || !strings.HasSuffix(question["org.matrix.msc1767.text"].(string), "Lunch?") ||
		answers[1].(map[string]any)["org.matrix.msc1767.text"] != "Sushi" || !strings.Contains(ps.Content.Raw["org.matrix.msc1767.text"].(string), "2. Sushi") {
		t.Errorf("the poll reached Matrix as %v", ps.Content.Raw)
	}
	// A vote from the platform: the voter's own response where a ghost
	// speaks for them, else words with the count answering the poll.
	k.inject(t, bridge.Event{Kind: bridge.KindVote, ID: "k-vote", Target: "k-poll", Vote: &bridge.Vote{Choices: []int{1}}})
	if k.prefix == "" {
		vote := k.next(t, "the vote", event.EventUnstablePollResponse)
		rel, _ := vote.Content.Raw["m.relates_to"].(map[string]any)
		resp, _ := vote.Content.Raw["org.matrix.msc3381.poll.response"].(map[string]any)
		if rel["rel_type"] != "m.reference" || rel["event_id"] != string(ps.ID) || fmt.Sprint(resp["answers"]) != "[2]" {
			t.Errorf("the vote reached Matrix as %v", vote.Content.Raw)
		}
	} else {
		words := k.next(t, "the vote in words", event.EventMessage).Content.AsMessage()
		if words.MsgType != event.MsgNotice || words.Body != "Carol voted for “Sushi” in “Lunch?” (Pizza 0 · Sushi 1)" ||
			words.RelatesTo.GetReplyTo() != ps.ID {
			t.Errorf("the vote reached Matrix as %s %q answering %s", words.MsgType, words.Body, words.RelatesTo.GetReplyTo())
		}
	}
	when := k.ownerSays(t, event.EventUnstablePollStart, map[string]any{
		"org.matrix.msc3381.poll.start": map[string]any{"kind": "org.matrix.msc3381.poll.undisclosed", "max_selections": 3,
			"question": map[string]any{"org.matrix.msc1767.text": "When?"},
			"answers": []any{map[string]any{"id": "a", "org.matrix.msc1767.text": "7"}, map[string]any{"id": "b", "org.matrix.msc1767.text": "8"},
				map[string]any{"id": "c", "org.matrix.msc1767.text": "9"}}},
		"org.matrix.msc1767.text": "When?\n1. 7\n2. 8\n3. 9"})
	out, _ = k.received(t)
	if p := out.Poll; p == nil || p.Question != "When?" || len(p.Options) != 3 || p.Options[2] != "9" || p.Choices != 0 {
		t.Errorf("the owner's poll reached src as %+v (poll %+v)", out.Event, out.Poll)
	}
	// The owner's vote, answers named by id, reaches the platform as
	// their places in the poll; an answer the poll lacks is left out.
	k.ownerSays(t, event.EventUnstablePollResponse, map[string]any{
		"m.relates_to":                     map[string]any{"rel_type": "m.reference", "event_id": string(when)},
		"org.matrix.msc3381.poll.response": map[string]any{"answers": []any{"c", "zz", "a"}}})
	out, _ = k.received(t)
	if out.Kind != bridge.KindVote || out.Target != "src-"+strconv.Itoa(k.got-1) || out.Vote == nil || fmt.Sprint(out.Vote.Choices) != "[2 0]" || out.Sender.IsOwner != (k.prefix == "") {
		t.Errorf("the owner's vote reached src as %s on %q, %+v from %+v; want choices [2 0] on src-%d", out.Kind, out.Target, out.Vote, out.Sender, k.got-1)
	}
}

// downloadURI fetches an mxc:// URI as h.
func downloadURI(t *testing.T, h *human, uri id.ContentURIString) []byte {
	t.Helper()
	if !strings.HasPrefix(string(uri), "mxc://") {
		t.Fatalf("no mxc:// URL: %q", uri)
	}
	return download(t, h.cli, uri)
}
