package matrix

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/phonebridge/phonebridge/bridge"
)

type fakeMedia struct {
	mime string
	data []byte
	// chunked sends no Content-Length, so only reading finds the size.
	chunked bool
}

// serveMedia is the fake's content repository, as a homeserver without
// authenticated media has it: upload, and download under /_matrix/media/v3
// only (the client API's /v1/media answers M_UNRECOGNIZED).
func (f *fakeHS) serveMedia(w http.ResponseWriter, r *http.Request) bool {
	switch {
	case r.URL.Path == "/_matrix/media/v3/upload":
		data, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		mediaID := "u" + strconv.Itoa(len(f.media))
		f.media[mediaID] = fakeMedia{mime: r.Header.Get("Content-Type"), data: data}
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"content_uri":"mxc://example.org/`+mediaID+`"}`)
		return true
	case strings.HasPrefix(r.URL.Path, "/_matrix/media/v3/download/example.org/"):
		f.mu.Lock()
		m, ok := f.media[strings.TrimPrefix(r.URL.Path, "/_matrix/media/v3/download/example.org/")]
		f.mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"errcode":"M_NOT_FOUND","error":"no such media"}`)
			return true
		}
		w.Header().Set("Content-Type", m.mime)
		if m.chunked {
			w.(http.Flusher).Flush()
		} else {
			w.Header().Set("Content-Length", strconv.Itoa(len(m.data)))
		}
		w.Write(m.data)
		return true
	}
	return false
}

func opener(content string) func(ctx context.Context) (io.ReadCloser, error) {
	return func(context.Context) (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(content)), nil }
}

func TestOpenMXCFallsBackAndBoundsTheSize(t *testing.T) {
	f := newFakeHS(t)
	f.media["pic"] = fakeMedia{mime: "image/png", data: []byte("0123456789")}
	f.media["stream"] = fakeMedia{mime: "image/png", data: []byte("0123456789"), chunked: true}
	cli := f.client(t)
	ctx := t.Context()
	read := func(ref string, max int64) (string, error) {
		rc, err := openMXC(ctx, cli, ref, max)
		if err != nil {
			return "", err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		return string(b), err
	}

	for _, ref := range []string{"mxc://example.org/pic", "mxc://example.org/stream"} {
		if got, err := read(ref, 10); err != nil || got != "0123456789" {
			t.Errorf("%s: %q, %v; want the file, from /_matrix/media/v3", ref, got, err)
		}
		if _, err := read(ref, 9); !bridge.IsPermanent(err) || !strings.Contains(err.Error(), "max_media_bytes") {
			t.Errorf("%s over the limit: %v, want a permanent error naming max_media_bytes", ref, err)
		}
	}
	if _, err := read("mxc://example.org/gone", 10); !bridge.IsPermanent(err) || !strings.Contains(err.Error(), "no longer") {
		t.Errorf("missing media: %v, want a permanent error", err)
	}
	if _, err := read("https://example.org/x.png", 10); !bridge.IsPermanent(err) {
		t.Errorf("a ref that is no mxc URI: %v", err)
	}
}

func TestSendMediaEachWithItsOwnTransaction(t *testing.T) {
	f := newFakeHS(t)
	s := &roomSender{cli: f.client(t), room: "!r:example.org", self: fakeUser, senderFormat: DefaultSenderFormat, maxMediaBytes: 64}
	out := outgoing("two pictures", func(o *bridge.Outgoing) {
		o.Key, o.ReplyTo = "pb.m", "$q"
		o.Media = []bridge.Media{
			{Name: "a.png", MIME: "image/png", Open: opener("AAAA")},
			{Name: "b.pdf", MIME: "application/pdf", Caption: "the report", Open: opener("BBBB")},
		}
	})
	first, err := s.send(t.Context(), out)
	if err != nil {
		t.Fatal(err)
	}
	reqs := f.requests()
	if len(reqs) != 2 || first != "$pb.m" || reqs[0].Txn != "pb.m" || reqs[1].Txn != "pb.m.m1" {
		t.Fatalf("sent %d events, first %q: %+v", len(reqs), first, reqs)
	}
	a, b := reqs[0].Body, reqs[1].Body
	if a["msgtype"] != "m.image" || a["body"] != "Ann: two pictures" || a["filename"] != "a.png" || a["m.relates_to"] == nil {
		t.Errorf("first attachment %v: want the image with the text as caption, replying", a)
	}
	if b["msgtype"] != "m.file" || b["body"] != "Ann: the report" || b["filename"] != "b.pdf" || b["m.relates_to"] != nil {
		t.Errorf("second attachment %v: want the file with its own caption", b)
	}
	f.mu.Lock()
	uploaded := fmt.Sprint(string(f.media["u0"].data), " ", string(f.media["u1"].data), " ", f.media["u0"].mime)
	f.mu.Unlock()
	if uploaded != "AAAA BBBB image/png" {
		t.Errorf("uploaded %s", uploaded)
	}

	big := outgoing("", func(o *bridge.Outgoing) {
		o.Media = []bridge.Media{{Name: "big.bin", Open: opener(strings.Repeat("x", 65))}}
	})
	if _, err := s.send(t.Context(), big); !bridge.IsPermanent(err) || !strings.Contains(err.Error(), "max_media_bytes") {
		t.Errorf("an attachment over max_media_bytes: %v, want a permanent error", err)
	}
	if n := len(f.requests()); n != 2 {
		t.Errorf("%d events sent, want no event for the refused attachment", n)
	}
}

// TestSendKindsAndPlaces: a sticker goes as an m.sticker event, a voice
// note and a GIF as messages with their keys, a place as an m.location,
// each under the delivery's key and replying where asked; a place with
// attachments sends them after it under their own keys.
func TestSendKindsAndPlaces(t *testing.T) {
	f := newFakeHS(t)
	s := &roomSender{cli: f.client(t), room: "!r:example.org", self: fakeUser, senderFormat: DefaultSenderFormat, maxMediaBytes: 64}
	send := func(out *bridge.Outgoing) string {
		t.Helper()
		native, err := s.send(t.Context(), out)
		if err != nil {
			t.Fatalf("send %s: %v", out.Key, err)
		}
		return native
	}
	sticker := send(outgoing("", func(o *bridge.Outgoing) {
		o.Key, o.ReplyTo = "pb.s", "$q"
		o.Media = []bridge.Media{{Name: "party", MIME: "image/webp", Kind: bridge.MediaSticker, Width: 512, Height: 512, Open: opener("WEBP")}}
	}))
	send(outgoing("", func(o *bridge.Outgoing) {
		o.Key = "pb.v"
		o.Media = []bridge.Media{{MIME: "audio/ogg", Kind: bridge.MediaVoice, DurationMS: 3000, Waveform: []int{1, 2}, Open: opener("OGG")}}
	}))
	send(outgoing("", func(o *bridge.Outgoing) {
		o.Key = "pb.g"
		o.Media = []bridge.Media{{MIME: "video/mp4", Kind: bridge.MediaGIF, Open: opener("MP4")}}
	}))
	place := send(outgoing("here", func(o *bridge.Outgoing) {
		o.Key, o.ReplyTo = "pb.l", "$q"
		o.Location = &bridge.Location{Latitude: 1.5, Longitude: 2.5, Name: "Home"}
		o.Media = []bridge.Media{{Name: "door.png", MIME: "image/png", Caption: "the door", Open: opener("PNG")}}
	}))
	if sticker != "$pb.s" || place != "$pb.l" {
		t.Errorf("native ids %q, %q; want the sticker's and the place's", sticker, place)
	}
	reqs, paths := f.keyedPaths(t)
	want := []string{
		"rooms/!r:example.org/send/m.sticker/pb.s",
		"rooms/!r:example.org/send/m.room.message/pb.v",
		"rooms/!r:example.org/send/m.room.message/pb.g",
		"rooms/!r:example.org/send/m.room.message/pb.l",
		"rooms/!r:example.org/send/m.room.message/pb.l.m1",
	}
	if fmt.Sprint(paths) != fmt.Sprint(want) {
		t.Fatalf("requests\n%v\nwant\n%v", paths, want)
	}
	st, voice, gif, loc, door := reqs[0].Body, reqs[1].Body, reqs[2].Body, reqs[3].Body, reqs[4].Body
	if st["msgtype"] != nil || st["body"] != "Ann: party" || st["m.relates_to"] == nil {
		t.Errorf("sticker %v: want no msgtype, its description after the sender, replying", st)
	}
	if voice["msgtype"] != "m.audio" || voice["org.matrix.msc3245.voice"] == nil || voice["org.matrix.msc1767.audio"] == nil {
		t.Errorf("voice note %v", voice)
	}
	if info, _ := gif["info"].(map[string]any); gif["msgtype"] != "m.video" || info["fi.mau.gif"] != true || info["fi.mau.loop"] != true {
		t.Errorf("GIF %v", gif)
	}
	if loc["msgtype"] != "m.location" || loc["geo_uri"] != "geo:1.5,2.5" || loc["m.relates_to"] == nil || loc["org.matrix.msc3488.location"] == nil {
		t.Errorf("place %v", loc)
	}
	if door["msgtype"] != "m.image" || door["body"] != "Ann: the door" || door["m.relates_to"] != nil {
		t.Errorf("the place's attachment %v: want its own caption, not replying", door)
	}

	_, err := s.send(t.Context(), outgoing("", func(o *bridge.Outgoing) {
		o.Key, o.Location = "pb.x", &bridge.Location{Latitude: 100, Longitude: 0}
	}))
	if !bridge.IsPermanent(err) {
		t.Errorf("a place off Earth: %v, want a permanent error", err)
	}
}
