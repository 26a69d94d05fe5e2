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
