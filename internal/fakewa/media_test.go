package fakewa

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"
)

// uploadedMessage is what a client sends after cli.Upload, as the
// whatsmeow documentation shows.
func uploadedMessage(t testing.TB, up whatsmeow.UploadResponse, mt whatsmeow.MediaType) *waE2E.Message {
	t.Helper()
	mi := MediaInfo{MediaType: mt, URL: up.URL, DirectPath: up.DirectPath, MediaKey: up.MediaKey,
		FileSHA256: up.FileSHA256, FileEncSHA256: up.FileEncSHA256, FileLength: up.FileLength}
	switch mt {
	case whatsmeow.MediaImage:
		return &waE2E.Message{ImageMessage: mi.Image("image/jpeg", "from the bridge")}
	case whatsmeow.MediaDocument:
		return &waE2E.Message{DocumentMessage: mi.Document("application/pdf", "report.pdf", "")}
	case whatsmeow.MediaAudio:
		return &waE2E.Message{AudioMessage: mi.Audio("audio/ogg; codecs=opus", true)}
	case whatsmeow.MediaVideo:
		return &waE2E.Message{VideoMessage: mi.Video("video/mp4", "")}
	}
	t.Fatalf("no message for %s", mt)
	return nil
}

// The real client encrypts and uploads; the server keeps only ciphertext
// whose hash is the upload token; the phone fetches and decrypts it.
func TestClientUploadPhoneDecrypts(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	cl := link(t, srv, alice)
	ctx := ctxT(t)
	kinds := []whatsmeow.MediaType{whatsmeow.MediaImage, whatsmeow.MediaDocument, whatsmeow.MediaAudio, whatsmeow.MediaVideo}
	for i, mt := range kinds {
		plain := randomBytes(1000 + 37*i)
		up, err := cl.Upload(ctx, plain, mt)
		if err != nil {
			t.Fatalf("upload %s: %v", mt, err)
		}
		ups := srv.Uploads()
		if len(ups) != i+1 {
			t.Fatalf("%d uploads recorded", len(ups))
		}
		got := ups[i]
		sum := sha256.Sum256(got.Data)
		if got.MediaType != mt || got.MMSType != mediaKinds[mt].mms || got.Path != up.DirectPath || !bytes.Equal(sum[:], up.FileEncSHA256) {
			t.Fatalf("upload recorded as %+v", got)
		}
		if bytes.Contains(got.Data, plain[:64]) {
			t.Fatal("the server holds plaintext")
		}
		resp, err := cl.SendMessage(ctx, bob.PN, uploadedMessage(t, up, mt))
		if err != nil {
			t.Fatal(err)
		}
		m, err := bob.WaitMessage(ctx, func(m Message) bool { return m.ID == resp.ID })
		if err != nil || m.Err != nil || m.Attachment() == nil {
			t.Fatalf("bob got %+v (%v)", m, err)
		}
		data, err := srv.DownloadMedia(ctx, m.Attachment())
		if err != nil {
			t.Fatalf("bob opening the %s: %v", mt, err)
		}
		if !bytes.Equal(data, plain) {
			t.Fatalf("bob's %s differs from what the client uploaded", mt)
		}
	}
}

// A byte flipped on the server: the file hash catches it, and when the
// message claims the tampered file's hash, the MAC does, on the phone and
// in the real client. The phone also checks the plaintext's hash and length.
func TestTamperedMediaFailsBothSides(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	cl := link(t, srv, alice)
	ctx := ctxT(t)
	plain := randomBytes(5000)
	up, err := cl.Upload(ctx, plain, whatsmeow.MediaImage)
	if err != nil {
		t.Fatal(err)
	}
	img := uploadedMessage(t, up, whatsmeow.MediaImage).ImageMessage
	if data, err := srv.DownloadMedia(ctx, img); err != nil || !bytes.Equal(data, plain) {
		t.Fatalf("untampered: %v", err)
	}

	wrongSHA := proto.Clone(img).(*waE2E.ImageMessage)
	wrongSHA.FileSHA256 = make([]byte, 32)
	if _, err := srv.DownloadMedia(ctx, wrongSHA); !errors.Is(err, whatsmeow.ErrInvalidMediaSHA256) {
		t.Fatalf("wrong plaintext hash: %v", err)
	}
	noHash := proto.Clone(img).(*waE2E.ImageMessage)
	noHash.FileEncSHA256 = nil
	if _, err := srv.DownloadMedia(ctx, noHash); err == nil {
		t.Fatal("a phone opened media without the file's hash")
	}
	wrongLen := proto.Clone(img).(*waE2E.ImageMessage)
	wrongLen.FileLength = proto.Uint64(4999)
	if _, err := srv.DownloadMedia(ctx, wrongLen); !errors.Is(err, whatsmeow.ErrFileLengthMismatch) {
		t.Fatalf("wrong length: %v", err)
	}

	newHash, err := srv.TamperMedia(img.GetDirectPath())
	if err != nil {
		t.Fatal(err)
	}
	claims := proto.Clone(img).(*waE2E.ImageMessage)
	claims.FileEncSHA256 = newHash
	if _, err := srv.DownloadMedia(ctx, img); !errors.Is(err, whatsmeow.ErrInvalidMediaEncSHA256) {
		t.Fatalf("phone, tampered file: %v", err)
	}
	if _, err := srv.DownloadMedia(ctx, claims); !errors.Is(err, whatsmeow.ErrInvalidMediaHMAC) {
		t.Fatalf("phone, tampered file with its hash: %v", err)
	}
	if _, err := cl.Download(ctx, img); !errors.Is(err, whatsmeow.ErrInvalidMediaEncSHA256) {
		t.Fatalf("client, tampered file: %v", err)
	}
	if _, err := cl.Download(ctx, claims); !errors.Is(err, whatsmeow.ErrInvalidMediaHMAC) {
		t.Fatalf("client, tampered file with its hash: %v", err)
	}
	// The record keeps what the client sent.
	if sum := sha256.Sum256(srv.Uploads()[0].Data); !bytes.Equal(sum[:], up.FileEncSHA256) {
		t.Fatal("tampering changed the record of the upload")
	}
}

// A phone sends an image and a document it encrypted; the real client
// downloads them by URL and by direct path, checks hashes and MAC, and
// gets the same bytes.
func TestPhoneSendsMediaClientDownloads(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	bob := srv.NewPhone("15550002222", "100000000000002", "Bob")
	cl := link(t, srv, alice)
	ctx := ctxT(t)

	photo := randomBytes(3333)
	img, err := srv.EncryptMedia(photo, whatsmeow.MediaImage)
	if err != nil {
		t.Fatal(err)
	}
	doc := []byte("%PDF-1.4 a small document\n")
	di, err := srv.EncryptMedia(doc, whatsmeow.MediaDocument)
	if err != nil {
		t.Fatal(err)
	}
	imgID, _ := bob.Send(ctx, alice.PN, &waE2E.Message{ImageMessage: img.Image("image/jpeg", "look at this")})
	docID, _ := bob.Send(ctx, alice.PN, &waE2E.Message{DocumentMessage: di.Document("application/pdf", "minutes.pdf", "the minutes")})

	m := waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Info.ID == imgID })
	im := m.Message.GetImageMessage()
	if im.GetCaption() != "look at this" || im.GetMimetype() != "image/jpeg" {
		t.Fatalf("image message %v", im)
	}
	if got, err := cl.Download(ctx, im); err != nil || !bytes.Equal(got, photo) {
		t.Fatalf("client download by URL: %v", err)
	}
	byPath := proto.Clone(im).(*waE2E.ImageMessage)
	byPath.URL = nil
	if got, err := cl.Download(ctx, byPath); err != nil || !bytes.Equal(got, photo) {
		t.Fatalf("client download by direct path: %v", err)
	}

	m = waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Info.ID == docID })
	dm := m.Message.GetDocumentMessage()
	if dm.GetFileName() != "minutes.pdf" || dm.GetMimetype() != "application/pdf" || dm.GetCaption() != "the minutes" {
		t.Fatalf("document message %v", dm)
	}
	if got, err := cl.Download(ctx, dm); err != nil || !bytes.Equal(got, doc) {
		t.Fatalf("client document download: %v", err)
	}
	// A sticker is an image by its keys.
	st, err := srv.EncryptMedia(randomBytes(700), whatsmeow.MediaImage)
	if err != nil {
		t.Fatal(err)
	}
	stID, _ := bob.Send(ctx, alice.PN, &waE2E.Message{StickerMessage: st.Sticker("image/webp")})
	m = waitEvent[*events.Message](t, cl, func(e *events.Message) bool { return e.Info.ID == stID })
	if got, err := cl.Download(ctx, m.Message.GetStickerMessage()); err != nil || len(got) != 700 {
		t.Fatalf("client sticker download: %v", err)
	}
	// The keys are the media type's: the same file as an image does not
	// decrypt as a document.
	wrongType := &waE2E.DocumentMessage{DirectPath: im.DirectPath, MediaKey: im.MediaKey, FileSHA256: im.FileSHA256,
		FileEncSHA256: im.FileEncSHA256, FileLength: im.FileLength}
	if _, err := cl.Download(ctx, wrongType); !errors.Is(err, whatsmeow.ErrInvalidMediaHMAC) {
		t.Fatalf("an image opened as a document: %v", err)
	}
}

// Paths the server never handed out give 404, edited signatures 403 and
// deleted files 410, which whatsmeow reports as its typed errors.
func TestMediaDownloadErrors(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	cl := link(t, srv, alice)
	ctx := ctxT(t)
	mi, err := srv.EncryptMedia(randomBytes(100), whatsmeow.MediaDocument)
	if err != nil {
		t.Fatal(err)
	}
	unknown := mi.Document("text/plain", "x.txt", "")
	unknown.URL = nil
	unknown.DirectPath = proto.String("/v/t62.7119-24/1_2_3_n.enc?ccb=11-4&oh=01_x&oe=FFFFFFFF")
	if _, err := cl.Download(ctx, unknown); !errors.Is(err, whatsmeow.ErrMediaDownloadFailedWith404) {
		t.Fatalf("unknown path: %v", err)
	}
	if _, err := srv.DownloadMedia(ctx, unknown); !errors.Is(err, whatsmeow.ErrMediaDownloadFailedWith404) {
		t.Fatalf("phone, unknown path: %v", err)
	}

	forged := mi.Document("text/plain", "x.txt", "")
	forged.URL = nil
	u, _ := url.Parse(mi.DirectPath)
	q := u.Query()
	q.Set("oe", "FFFFFFFF") // a longer life than was signed
	u.RawQuery = q.Encode()
	forged.DirectPath = proto.String(u.String())
	if _, err := cl.Download(ctx, forged); !errors.Is(err, whatsmeow.ErrMediaDownloadFailedWith403) {
		t.Fatalf("edited signature: %v", err)
	}

	// Signed, but past its expiry.
	oldOE := strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 16)
	q.Set("oe", oldOE)
	q.Set("oh", urlSignature(u.Path, oldOE))
	u.RawQuery = q.Encode()
	forged.DirectPath = proto.String(u.String())
	if _, err := cl.Download(ctx, forged); !errors.Is(err, whatsmeow.ErrMediaDownloadFailedWith403) {
		t.Fatalf("expired signature: %v", err)
	}
	// Media lives on the media host only.
	if code, _ := fetch(t, srv, "https://"+pictureHost+mi.DirectPath); code != http.StatusNotFound {
		t.Fatalf("media on the picture host: %d", code)
	}

	ok := mi.Document("text/plain", "x.txt", "")
	if _, err := cl.Download(ctx, ok); err != nil {
		t.Fatal(err)
	}
	if err := srv.DeleteMedia(mi.DirectPath); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Download(ctx, ok); !errors.Is(err, whatsmeow.ErrMediaDownloadFailedWith410) {
		t.Fatalf("deleted file: %v", err)
	}
}

// Uploads need the media_conn auth token: once the server rotates it, the
// client's cached one is refused.
func TestUploadNeedsAuth(t *testing.T) {
	srv := newServer(t, Options{})
	alice := srv.NewPhone("15550001111", "100000000000001", "Alice")
	cl := link(t, srv, alice)
	ctx := ctxT(t)
	if _, err := cl.Upload(ctx, []byte("first"), whatsmeow.MediaDocument); err != nil {
		t.Fatal(err)
	}
	srv.RotateMediaAuth()
	_, err := cl.Upload(ctx, []byte("second"), whatsmeow.MediaDocument)
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("upload with a stale auth token: %v", err)
	}
	if n := len(srv.Uploads()); n != 1 {
		t.Fatalf("%d uploads kept, want 1", n)
	}
}

// The server's own checks of an upload, over raw HTTP: the token must be
// the body's hash and the body must not be empty.
func TestUploadChecks(t *testing.T) {
	srv := newServer(t, Options{})
	srv.mu.Lock()
	auth := srv.mediaAuthLocked()
	srv.mu.Unlock()
	hc := srv.HTTPClient()
	defer hc.CloseIdleConnections()
	postAs := func(typ, auth, pathToken, queryToken string, body []byte) int {
		t.Helper()
		u := fmt.Sprintf("https://%s/mms/%s/%s?%s", mediaHost, typ, pathToken, url.Values{"auth": {auth}, "token": {queryToken}}.Encode())
		resp, err := hc.Post(u, "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	post := func(typ, auth, token string, body []byte) int { return postAs(typ, auth, token, token, body) }
	tok := func(b []byte) string { s := sha256.Sum256(b); return base64.URLEncoding.EncodeToString(s[:]) }
	body := randomBytes(64)
	if code := post("image", auth, tok([]byte("something else")), body); code != http.StatusBadRequest {
		t.Fatalf("token not the body's hash: %d", code)
	}
	if code := postAs("image", auth, tok(body), tok([]byte("other")), body); code != http.StatusBadRequest {
		t.Fatalf("query token not the path's: %d", code)
	}
	if code := post("image", auth, tok(nil), nil); code != http.StatusBadRequest {
		t.Fatalf("empty body: %d", code)
	}
	if code := post("image", "", tok(body), body); code != http.StatusUnauthorized {
		t.Fatalf("no auth: %d", code)
	}
	if code := post("image", auth, tok(body), body); code != http.StatusOK {
		t.Fatalf("a good upload: %d", code)
	}
	if n := len(srv.Uploads()); n != 1 {
		t.Fatalf("%d uploads kept, want 1", n)
	}
}
