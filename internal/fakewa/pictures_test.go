package fakewa

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"net/http"
	"testing"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
)

// testJPEG is a small valid JPEG of one colour.
func testJPEG(t testing.TB, shade uint8) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 8, 8))
	for i := range img.Pix {
		img.Pix[i] = shade
	}
	img.Set(0, 0, color.RGBA{255, 0, 0, 255})
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fetch downloads a picture URL as the client would, over its media HTTP
// client; it returns the status and body.
func fetch(t testing.TB, srv *Server, u string) (int, []byte) {
	t.Helper()
	hc := srv.HTTPClient()
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestProfilePicture(t *testing.T) {
	for _, lid := range []bool{false, true} {
		t.Run(map[bool]string{false: "pn", true: "lid"}[lid], func(t *testing.T) {
			srv := newServer(t, Options{LIDAddressing: lid})
			alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
			bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
			carol := srv.NewPhone("15550003333", "100000000000003", "Carol")
			alice.AddContact(bob)
			cl := link(t, srv, alice)
			ctx := ctxT(t)
			bobJID := peerJID(bob, lid) // how notifications name him

			if _, err := cl.GetProfilePictureInfo(ctx, bob.PN, nil); !errors.Is(err, whatsmeow.ErrProfilePictureNotSet) {
				t.Fatalf("no picture yet: %v", err)
			}

			first := testJPEG(t, 10)
			id1 := bob.SetPicture(first)
			evt := waitEvent[*events.Picture](t, cl, func(e *events.Picture) bool { return e.JID == bobJID })
			if evt.Remove || evt.PictureID != id1 {
				t.Fatalf("picture event %+v, want id %s", evt, id1)
			}
			info, err := cl.GetProfilePictureInfo(ctx, bob.PN, nil)
			if err != nil || info.ID != id1 || info.Type != "image" || info.DirectPath == "" {
				t.Fatalf("picture info %+v, %v", info, err)
			}
			if code, body := fetch(t, srv, info.URL); code != http.StatusOK || !bytes.Equal(body, first) {
				t.Fatalf("picture download: %d, %d bytes", code, len(body))
			}
			preview, err := cl.GetProfilePictureInfo(ctx, bob.LID, &whatsmeow.GetProfilePictureParams{Preview: true})
			if err != nil || preview.ID != id1 || preview.Type != "preview" {
				t.Fatalf("preview info %+v, %v", preview, err)
			}
			if same, err := cl.GetProfilePictureInfo(ctx, bob.PN, &whatsmeow.GetProfilePictureParams{ExistingID: id1}); same != nil || err != nil {
				t.Fatalf("asking with the current id: %+v, %v", same, err)
			}

			second := testJPEG(t, 200)
			id2 := bob.SetPicture(second)
			evt = waitEvent[*events.Picture](t, cl, func(e *events.Picture) bool { return e.JID == bobJID && e.PictureID != id1 })
			if id2 == id1 || evt.PictureID != id2 {
				t.Fatalf("changed picture: event %+v, ids %s → %s", evt, id1, id2)
			}
			info2, err := cl.GetProfilePictureInfo(ctx, bob.PN, &whatsmeow.GetProfilePictureParams{ExistingID: id1})
			if err != nil || info2 == nil || info2.ID != id2 {
				t.Fatalf("picture info after the change %+v, %v", info2, err)
			}
			if code, body := fetch(t, srv, info2.URL); code != http.StatusOK || !bytes.Equal(body, second) {
				t.Fatalf("new picture download: %d", code)
			}
			if code, _ := fetch(t, srv, info.URL); code != http.StatusNotFound {
				t.Fatalf("the old picture's URL answers %d", code)
			}

			bob.SetPicture(nil)
			waitEvent[*events.Picture](t, cl, func(e *events.Picture) bool { return e.JID == bobJID && e.Remove })
			if _, err := cl.GetProfilePictureInfo(ctx, bob.PN, nil); !errors.Is(err, whatsmeow.ErrProfilePictureNotSet) {
				t.Fatalf("removed picture: %v", err)
			}

			bob.SetPicture(first)
			bob.HidePicture(true)
			if _, err := cl.GetProfilePictureInfo(ctx, bob.PN, nil); !errors.Is(err, whatsmeow.ErrProfilePictureUnauthorized) {
				t.Fatalf("hidden picture: %v", err)
			}
			if _, err := cl.GetProfilePictureInfo(ctx, types.NewJID("15559999999", types.DefaultUserServer), nil); !errors.Is(err, whatsmeow.ErrProfilePictureNotSet) {
				t.Fatalf("someone not on WhatsApp: %v", err)
			}
			// Asked by phone number and by LID, both count for bob.
			if n := srv.PictureQueries(bob.PN); n != 7 {
				t.Fatalf("%d picture queries for bob, want 7", n)
			}
			if n := srv.PictureQueries(bob.LID); n != 7 {
				t.Fatalf("%d picture queries for bob's LID, want 7", n)
			}

			// Carol is neither in alice's contacts nor in a group with her:
			// her change reaches none of alice's devices. Bob's next one
			// does, and notifications arrive in order.
			carol.SetPicture(first)
			last := bob.SetPicture(second)
			waitEvent[*events.Picture](t, cl, func(e *events.Picture) bool { return e.PictureID == last })
			for _, e := range cl.events.all() {
				if p, ok := e.(*events.Picture); ok && (p.JID == carol.PN || p.JID == carol.LID) {
					t.Fatalf("alice heard of a stranger's picture: %+v", p)
				}
			}
		})
	}
}

func TestGroupPicture(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	carol := srv.NewPhone("15550003333", "100000000000003", "Carol")
	g := srv.NewGroup("120363000000000001", "Pictures", bob, alice)
	other := srv.NewGroup("120363000000000002", "Not alice's", carol, bob)
	cl := link(t, srv, alice)
	ctx := ctxT(t)

	if _, err := cl.GetProfilePictureInfo(ctx, g.JID, nil); !errors.Is(err, whatsmeow.ErrProfilePictureNotSet) {
		t.Fatalf("no group picture yet: %v", err)
	}
	pic := testJPEG(t, 99)
	id, err := g.SetPicture(pic)
	if err != nil {
		t.Fatal(err)
	}
	evt := waitEvent[*events.Picture](t, cl, func(e *events.Picture) bool { return e.JID == g.JID })
	if evt.PictureID != id || evt.Author != bob.PN || evt.Remove {
		t.Fatalf("group picture event %+v, want id %s by bob", evt, id)
	}
	info, err := cl.GetProfilePictureInfo(ctx, g.JID, nil)
	if err != nil || info.ID != id {
		t.Fatalf("group picture info %+v, %v", info, err)
	}
	if code, body := fetch(t, srv, info.URL); code != http.StatusOK || !bytes.Equal(body, pic) {
		t.Fatalf("group picture download: %d", code)
	}
	if _, err := g.SetPicture(nil); err != nil {
		t.Fatal(err)
	}
	waitEvent[*events.Picture](t, cl, func(e *events.Picture) bool { return e.JID == g.JID && e.Remove })

	// Bob is not in alice's contacts, but sharing a group, she hears of
	// his own picture too.
	bobID := bob.SetPicture(pic)
	waitEvent[*events.Picture](t, cl, func(e *events.Picture) bool { return e.JID == bob.PN && e.PictureID == bobID })

	// The client changes it: only a JPEG, only in its own groups.
	if _, err := cl.SetGroupPhoto(ctx, g.JID, []byte("not a jpeg")); !errors.Is(err, whatsmeow.ErrInvalidImageFormat) {
		t.Fatalf("a PNG-ish picture: %v", err)
	}
	mine := testJPEG(t, 42)
	newID, err := cl.SetGroupPhoto(ctx, g.JID, mine)
	if err != nil {
		t.Fatal(err)
	}
	if gotID, data := srv.Picture(g.JID); gotID != newID || !bytes.Equal(data, mine) {
		t.Fatalf("server has picture %q (%d bytes), client was told %q", gotID, len(data), newID)
	}
	// The device that made the change is not told of it; the next change
	// is, and notifications arrive in order.
	later, _ := g.SetPicture(testJPEG(t, 7))
	waitEvent[*events.Picture](t, cl, func(e *events.Picture) bool { return e.PictureID == later })
	for _, e := range cl.events.all() {
		if p, ok := e.(*events.Picture); ok && p.PictureID == newID {
			t.Fatalf("the changing device was told of its own change: %+v", p)
		}
	}
	// Its own account's picture, and no one else's.
	if _, err := cl.SetGroupPhoto(ctx, alice.PN, mine); err != nil {
		t.Fatal(err)
	}
	if _, data := srv.Picture(alice.LID); !bytes.Equal(data, mine) {
		t.Fatal("alice's own picture was not set")
	}
	if _, err := cl.SetGroupPhoto(ctx, bob.PN, mine); err == nil {
		t.Fatal("alice's device set bob's picture")
	}
	if _, err := cl.SetGroupPhoto(ctx, other.JID, mine); err == nil {
		t.Fatal("set the picture of a group alice is not in")
	}
	other.SetPicture(pic)
	if _, err := cl.GetProfilePictureInfo(ctx, other.JID, nil); !errors.Is(err, whatsmeow.ErrProfilePictureUnauthorized) {
		t.Fatalf("picture of a group alice is not in: %v", err)
	}
	if n := srv.PictureQueries(g.JID); n != 2 {
		t.Fatalf("%d picture queries for the group, want 2", n)
	}
}
