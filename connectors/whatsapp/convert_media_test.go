package whatsapp

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"google.golang.org/protobuf/proto"

	"github.com/phonebridge/phonebridge/bridge"
)

// A media message's download fields, as WhatsApp sends them.
var (
	waMediaURL   = "https://mmg.whatsapp.net/v/t62.7118-24/11111_22222_n.enc?ccb=11-4&oh=x&oe=y&_nc_sid=5e03e0&mms3=true"
	waDirectPath = "/v/t62.7118-24/11111_22222_n.enc?ccb=11-4&oh=x&oe=y&_nc_sid=5e03e0"
	waMediaKey   = bytes.Repeat([]byte{0x4b}, 32)
	waEncSHA     = bytes.Repeat([]byte{0xe5}, 32)
	waSHA        = bytes.Repeat([]byte{0x5a}, 32)
)

// mediaRefFor is the reference an inbound attachment of kind and mimeType,
// with the test download fields and size, must carry.
func mediaRefFor(kind, mimeType string, size uint64) mediaRef {
	return mediaRef{
		Kind: kind, DirectPath: waDirectPath, URL: waMediaURL, MediaKey: waMediaKey,
		FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: size, MIME: mimeType,
	}
}

func sameMediaRef(a, b mediaRef) bool {
	return a.Kind == b.Kind && a.DirectPath == b.DirectPath && a.URL == b.URL && a.FileLength == b.FileLength &&
		a.MIME == b.MIME && bytes.Equal(a.MediaKey, b.MediaKey) && bytes.Equal(a.FileEncSHA256, b.FileEncSHA256) &&
		bytes.Equal(a.FileSHA256, b.FileSHA256)
}

func TestConvertIncomingMedia(t *testing.T) {
	type want struct {
		text, html string
		media      bridge.Media // without Ref
		ref        mediaRef
		preview    string // the msgRef text
	}
	tests := []struct {
		name string
		msg  *waE2E.Message
		want want
	}{
		{
			name: "image with caption",
			msg: &waE2E.Message{ImageMessage: &waE2E.ImageMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(48213),
				Mimetype: proto.String("image/jpeg"), Caption: proto.String("*look* at this"),
				Width: proto.Uint32(1280), Height: proto.Uint32(960), JPEGThumbnail: []byte{0xff, 0xd8},
			}},
			want: want{
				text: "*look* at this", html: "<b>look</b> at this",
				media:   bridge.Media{MIME: "image/jpeg", Name: "image.jpg", Size: 48213, Caption: "*look* at this", Width: 1280, Height: 960},
				ref:     mediaRefFor(mediaImage, "image/jpeg", 48213),
				preview: "*look* at this",
			},
		},
		{
			name: "image without caption or type",
			msg: &waE2E.Message{ImageMessage: &waE2E.ImageMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(1000),
			}},
			want: want{
				media:   bridge.Media{MIME: "image/jpeg", Name: "image.jpg", Size: 1000},
				ref:     mediaRefFor(mediaImage, "image/jpeg", 1000),
				preview: "Photo",
			},
		},
		{
			name: "png image",
			msg: &waE2E.Message{ImageMessage: &waE2E.ImageMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(5), Mimetype: proto.String("image/png"),
			}},
			want: want{
				media:   bridge.Media{MIME: "image/png", Name: "image.png", Size: 5},
				ref:     mediaRefFor(mediaImage, "image/png", 5),
				preview: "Photo",
			},
		},
		{
			name: "video with caption",
			msg: &waE2E.Message{VideoMessage: &waE2E.VideoMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(2_000_000),
				Mimetype: proto.String("video/mp4"), Caption: proto.String("holiday"), Seconds: proto.Uint32(12),
			}},
			want: want{
				text:    "holiday",
				media:   bridge.Media{MIME: "video/mp4", Name: "video.mp4", Size: 2_000_000, Caption: "holiday", DurationMS: 12_000},
				ref:     mediaRefFor(mediaVideo, "video/mp4", 2_000_000),
				preview: "holiday",
			},
		},
		{
			name: "gif",
			msg: &waE2E.Message{VideoMessage: &waE2E.VideoMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(300),
				Mimetype: proto.String("video/mp4"), GifPlayback: proto.Bool(true),
			}},
			want: want{
				media:   bridge.Media{MIME: "video/mp4", Name: "video.mp4", Size: 300, Kind: bridge.MediaGIF},
				ref:     mediaRefFor(mediaVideo, "video/mp4", 300),
				preview: "GIF",
			},
		},
		{
			name: "video note",
			msg: &waE2E.Message{PtvMessage: &waE2E.VideoMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(400),
			}},
			want: want{
				media:   bridge.Media{MIME: "video/mp4", Name: "video.mp4", Size: 400, Kind: bridge.MediaVideoNote},
				ref:     mediaRefFor(mediaVideo, "video/mp4", 400),
				preview: "Video message",
			},
		},
		{
			name: "voice message",
			msg: &waE2E.Message{AudioMessage: &waE2E.AudioMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(7777),
				Mimetype: proto.String("audio/ogg; codecs=opus"), PTT: proto.Bool(true), Seconds: proto.Uint32(3),
				Waveform: []byte{0, 50, 100, 255},
			}},
			want: want{
				// WhatsApp's 0..100 samples scaled to 0..1024, a bad one capped.
				media:   bridge.Media{MIME: "audio/ogg; codecs=opus", Name: "voice.ogg", Size: 7777, Kind: bridge.MediaVoice, DurationMS: 3000, Waveform: []int{0, 512, 1024, 1024}},
				ref:     mediaRefFor(mediaAudio, "audio/ogg; codecs=opus", 7777),
				preview: "Voice message",
			},
		},
		{
			name: "audio file",
			msg: &waE2E.Message{AudioMessage: &waE2E.AudioMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(3_500_000),
				Mimetype: proto.String("audio/mpeg"),
			}},
			want: want{
				media:   bridge.Media{MIME: "audio/mpeg", Name: "audio.mp3", Size: 3_500_000},
				ref:     mediaRefFor(mediaAudio, "audio/mpeg", 3_500_000),
				preview: "Audio",
			},
		},
		{
			name: "document with file name and caption",
			msg: &waE2E.Message{DocumentMessage: &waE2E.DocumentMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(99_000),
				Mimetype: proto.String("application/pdf"), FileName: proto.String("Q3 report.pdf"),
				Title: proto.String("Q3 report"), PageCount: proto.Uint32(4), Caption: proto.String("see _page 2_"),
			}},
			want: want{
				text: "see _page 2_", html: "see <i>page 2</i>",
				media:   bridge.Media{MIME: "application/pdf", Name: "Q3 report.pdf", Size: 99_000, Caption: "see _page 2_"},
				ref:     mediaRefFor(mediaDocument, "application/pdf", 99_000),
				preview: "see _page 2_",
			},
		},
		{
			name: "document named by its title",
			msg: &waE2E.Message{DocumentMessage: &waE2E.DocumentMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(10),
				Mimetype: proto.String("application/zip"), Title: proto.String("photos.zip"),
			}},
			want: want{
				media:   bridge.Media{MIME: "application/zip", Name: "photos.zip", Size: 10},
				ref:     mediaRefFor(mediaDocument, "application/zip", 10),
				preview: "📄 photos.zip",
			},
		},
		{
			// A file name is the sender's: it must not name a path.
			name: "document with a path for a name",
			msg: &waE2E.Message{DocumentMessage: &waE2E.DocumentMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(10),
				Mimetype: proto.String("text/plain"), FileName: proto.String(`..\..\Windows\evil.txt`),
			}},
			want: want{
				media:   bridge.Media{MIME: "text/plain", Name: "evil.txt", Size: 10},
				ref:     mediaRefFor(mediaDocument, "text/plain", 10),
				preview: "📄 evil.txt",
			},
		},
		{
			name: "document without name or type",
			msg: &waE2E.Message{DocumentMessage: &waE2E.DocumentMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(10), FileName: proto.String(" .. "),
			}},
			want: want{
				media:   bridge.Media{MIME: "application/octet-stream", Name: "document", Size: 10},
				ref:     mediaRefFor(mediaDocument, "application/octet-stream", 10),
				preview: "📄 document",
			},
		},
		{
			// WhatsApp sends a captioned document in its own envelope.
			name: "document with caption envelope",
			msg: &waE2E.Message{DocumentWithCaptionMessage: &waE2E.FutureProofMessage{Message: &waE2E.Message{
				DocumentMessage: &waE2E.DocumentMessage{
					URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
					FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(20),
					Mimetype: proto.String("application/pdf"), FileName: proto.String("a.pdf"), Caption: proto.String("the contract"),
				},
			}}},
			want: want{
				text:    "the contract",
				media:   bridge.Media{MIME: "application/pdf", Name: "a.pdf", Size: 20, Caption: "the contract"},
				ref:     mediaRefFor(mediaDocument, "application/pdf", 20),
				preview: "the contract",
			},
		},
		{
			name: "sticker",
			msg: &waE2E.Message{StickerMessage: &waE2E.StickerMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(24_000),
				Mimetype: proto.String("image/webp"), IsAnimated: proto.Bool(true), Width: proto.Uint32(512), Height: proto.Uint32(512),
			}},
			want: want{
				media:   bridge.Media{MIME: "image/webp", Name: "sticker.webp", Size: 24_000, Kind: bridge.MediaSticker, Width: 512, Height: 512},
				ref:     mediaRefFor(mediaSticker, "image/webp", 24_000),
				preview: "Sticker",
			},
		},
		{
			name: "view-once image",
			msg: &waE2E.Message{ViewOnceMessageV2: &waE2E.FutureProofMessage{Message: &waE2E.Message{
				ImageMessage: &waE2E.ImageMessage{
					URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
					FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(1),
					Mimetype: proto.String("image/jpeg"), ViewOnce: proto.Bool(true),
				},
			}}},
			want: want{
				media:   bridge.Media{MIME: "image/jpeg", Name: "image.jpg", Size: 1},
				ref:     mediaRefFor(mediaImage, "image/jpeg", 1),
				preview: "Photo",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := infoGroup(onDevice(aliceJID, 1), "3EB0MEDIA")
			want := neutralEvent(info, "Alice")
			want.Text, want.HTML = tt.want.text, tt.want.html
			m := tt.want.media
			m.Ref = encodeMediaRef(tt.want.ref)
			want.Media = []bridge.Media{m}
			checkIncoming(t, dispatched(info, tt.msg), "Alice", want, msgRefOf(info, tt.want.preview))

			// The reference alone is enough to download the media later.
			got, _ := convertIncoming(dispatched(info, tt.msg), "Alice")
			ref, err := decodeMediaRef(got.Event.Media[0].Ref)
			if err != nil {
				t.Fatalf("decodeMediaRef: %v", err)
			}
			if !sameMediaRef(ref, tt.want.ref) {
				t.Errorf("decoded ref %+v; want %+v", ref, tt.want.ref)
			}
		})
	}
}

// TestConvertIncomingMediaSize: a size WhatsApp states beyond int64 is
// capped, not wrapped negative.
func TestConvertIncomingMediaSize(t *testing.T) {
	msg := &waE2E.Message{DocumentMessage: &waE2E.DocumentMessage{
		DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey, FileLength: proto.Uint64(1 << 63),
	}}
	got, ok := convertIncoming(dispatched(infoDM(aliceJID, "BIG"), msg), "")
	if !ok || got.Event.Media[0].Size != 1<<62 {
		t.Fatalf("ok %v, media %+v; want size 1<<62", ok, got.Event.Media)
	}
}

func TestMediaRefRoundTrip(t *testing.T) {
	for _, r := range []mediaRef{
		mediaRefFor(mediaImage, "image/jpeg", 1),
		mediaRefFor(mediaVideo, "video/mp4", 1<<40),
		mediaRefFor(mediaAudio, "audio/ogg; codecs=opus", 0),
		mediaRefFor(mediaDocument, "application/pdf", 3),
		mediaRefFor(mediaSticker, "image/webp", 4),
		// Old messages have a URL and no direct path.
		{Kind: mediaImage, URL: waMediaURL, MediaKey: []byte{1}},
		{Kind: mediaDocument, DirectPath: "/p", MediaKey: []byte{0}},
	} {
		got, err := decodeMediaRef(encodeMediaRef(r))
		if err != nil {
			t.Errorf("decodeMediaRef(encodeMediaRef(%+v)): %v", r, err)
			continue
		}
		if !sameMediaRef(got, r) {
			t.Errorf("round trip of %+v gave %+v", r, got)
		}
	}
}

func TestDecodeMediaRefRefuses(t *testing.T) {
	valid := mediaRefFor(mediaImage, "image/jpeg", 1)
	with := func(change func(*mediaRef)) string {
		r := valid
		change(&r)
		return encodeMediaRef(r)
	}
	for name, s := range map[string]string{
		"empty":          "",
		"not JSON":       "image:/v/t62/abc",
		"truncated":      encodeMediaRef(valid)[:20],
		"JSON null":      "null",
		"JSON array":     `[1,2]`,
		"unknown kind":   with(func(r *mediaRef) { r.Kind = "gif" }),
		"no kind":        with(func(r *mediaRef) { r.Kind = "" }),
		"no path or URL": with(func(r *mediaRef) { r.DirectPath, r.URL = "", "" }),
		"no media key":   with(func(r *mediaRef) { r.MediaKey = nil }),
		"bad base64 key": `{"kind":"image","direct_path":"/p","media_key":"!!"}`,
	} {
		if r, err := decodeMediaRef(s); err == nil {
			t.Errorf("%s: decodeMediaRef(%q) = %+v; want an error", name, s, r)
		}
	}
}

func TestMediaRefMediaType(t *testing.T) {
	for kind, want := range map[string]whatsmeow.MediaType{
		mediaImage:    whatsmeow.MediaImage,
		mediaSticker:  whatsmeow.MediaImage, // stickers are encrypted as images
		mediaVideo:    whatsmeow.MediaVideo,
		mediaAudio:    whatsmeow.MediaAudio,
		mediaDocument: whatsmeow.MediaDocument,
	} {
		if got := (mediaRef{Kind: kind}).mediaType(); got != want {
			t.Errorf("mediaType of %s = %q; want %q", kind, got, want)
		}
	}
}

func FuzzDecodeMediaRef(f *testing.F) {
	for _, s := range []string{
		encodeMediaRef(mediaRefFor(mediaImage, "image/jpeg", 1)),
		encodeMediaRef(mediaRefFor(mediaSticker, "image/webp", 0)),
		encodeMediaRef(mediaRef{Kind: mediaAudio, URL: "u", MediaKey: []byte{1}}),
		"", "{}", "null", "[]", `"image"`, `{"kind":"video","direct_path":"/p","media_key":""}`,
		`{"kind":"document","direct_path":"/p","media_key":"AA==","file_length":-1}`,
		`{"KIND":"image","Direct_Path":"/p","media_key":"AQ==","file_enc_sha256":""}`,
		`{"kind":"image","direct_path":"\ud800","media_key":"AQ==","mime":"\xff"}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := decodeMediaRef(s)
		if err != nil {
			if !sameMediaRef(r, mediaRef{}) {
				t.Fatalf("decodeMediaRef(%q) failed with %v but returned %+v", s, err, r)
			}
			return
		}
		// What it accepts can be downloaded: a kind, a path and a key.
		switch r.Kind {
		case mediaImage, mediaVideo, mediaAudio, mediaDocument, mediaSticker:
		default:
			t.Fatalf("decodeMediaRef(%q) accepted kind %q", s, r.Kind)
		}
		if (r.DirectPath == "" && r.URL == "") || len(r.MediaKey) == 0 {
			t.Fatalf("decodeMediaRef(%q) accepted %+v, which cannot be downloaded", s, r)
		}
		// And it survives being stored again.
		again, err := decodeMediaRef(encodeMediaRef(r))
		if err != nil || !sameMediaRef(again, r) {
			t.Fatalf("re-encoding %+v gave %+v, %v", r, again, err)
		}
	})
}

func TestMediaKind(t *testing.T) {
	tests := []struct {
		mime, name string
		kind       string
		mediaType  whatsmeow.MediaType
	}{
		{"image/jpeg", "photo.jpg", mediaImage, whatsmeow.MediaImage},
		{"image/png", "", mediaImage, whatsmeow.MediaImage},
		{"IMAGE/JPEG; q=1", "", mediaImage, whatsmeow.MediaImage},
		{"video/mp4", "", mediaVideo, whatsmeow.MediaVideo},
		{"video/3gpp", "", mediaVideo, whatsmeow.MediaVideo},
		{"audio/ogg; codecs=opus", "voice.ogg", mediaAudio, whatsmeow.MediaAudio},
		{"audio/opus", "", mediaAudio, whatsmeow.MediaAudio},
		{"audio/mpeg", "", mediaAudio, whatsmeow.MediaAudio},
		{"audio/mp4", "", mediaAudio, whatsmeow.MediaAudio},
		{"audio/x-m4a", "", mediaAudio, whatsmeow.MediaAudio},
		{"audio/aac", "", mediaAudio, whatsmeow.MediaAudio},
		{"audio/amr", "", mediaAudio, whatsmeow.MediaAudio},
		// Formats WhatsApp does not play inline go as files, intact.
		{"image/gif", "anim.gif", mediaDocument, whatsmeow.MediaDocument},
		{"image/webp", "", mediaDocument, whatsmeow.MediaDocument},
		{"image/svg+xml", "", mediaDocument, whatsmeow.MediaDocument},
		{"video/quicktime", "clip.mov", mediaDocument, whatsmeow.MediaDocument},
		{"audio/wav", "", mediaDocument, whatsmeow.MediaDocument},
		{"application/pdf", "a.pdf", mediaDocument, whatsmeow.MediaDocument},
		// The type wins over the name.
		{"application/pdf", "looks.jpg", mediaDocument, whatsmeow.MediaDocument},
		// Without a useful type, the name decides.
		{"", "Photo.JPG", mediaImage, whatsmeow.MediaImage},
		{"", "photo.jpeg", mediaImage, whatsmeow.MediaImage},
		{"application/octet-stream", "clip.mp4", mediaVideo, whatsmeow.MediaVideo},
		{"", "song.mp3", mediaAudio, whatsmeow.MediaAudio},
		{"", "memo.m4a", mediaAudio, whatsmeow.MediaAudio},
		{"", "notes.txt", mediaDocument, whatsmeow.MediaDocument},
		{"", "no-extension", mediaDocument, whatsmeow.MediaDocument},
		{"", "", mediaDocument, whatsmeow.MediaDocument},
	}
	for _, tt := range tests {
		kind, mediaType := mediaKind(bridge.Media{MIME: tt.mime, Name: tt.name})
		if kind != tt.kind || mediaType != tt.mediaType {
			t.Errorf("mediaKind(%q, %q) = %s, %s; want %s, %s", tt.mime, tt.name, kind, mediaType, tt.kind, tt.mediaType)
		}
	}
	// A sticker is sent as one only in the WebP WhatsApp shows; another
	// image goes as an image.
	for _, tt := range []struct {
		m         bridge.Media
		kind      string
		mediaType whatsmeow.MediaType
	}{
		{bridge.Media{MIME: "image/webp", Kind: bridge.MediaSticker}, mediaSticker, whatsmeow.MediaImage},
		{bridge.Media{Name: "s.webp", Kind: bridge.MediaSticker}, mediaSticker, whatsmeow.MediaImage},
		{bridge.Media{MIME: "image/png", Kind: bridge.MediaSticker}, mediaImage, whatsmeow.MediaImage},
		{bridge.Media{MIME: "image/webp"}, mediaDocument, whatsmeow.MediaDocument},
	} {
		if kind, mediaType := mediaKind(tt.m); kind != tt.kind || mediaType != tt.mediaType {
			t.Errorf("mediaKind(%+v) = %s, %s; want %s, %s", tt.m, kind, mediaType, tt.kind, tt.mediaType)
		}
	}
}

func TestMediaMessage(t *testing.T) {
	up := whatsmeow.UploadResponse{
		URL: waMediaURL, DirectPath: waDirectPath, Handle: "h", ObjectID: "o",
		MediaKey: waMediaKey, FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: 4242,
	}
	quoted := &msgRef{Chat: groupJID, ID: "3EB0QUOTED", Sender: onDevice(bobJID, 4), Text: "the question"}
	reply := &waE2E.ContextInfo{
		StanzaID:      proto.String("3EB0QUOTED"),
		Participant:   proto.String(bobJID.String()),
		QuotedMessage: &waE2E.Message{Conversation: proto.String("the question")},
	}
	tests := []struct {
		name                   string
		kind, mime, file, capt string
		as                     bridge.Media // the attachment's kind, length, size and waveform
		quoted                 *msgRef
		want                   *waE2E.Message
	}{
		{
			name: "image with caption, replying", kind: mediaImage, mime: "image/png", file: "shot.png", capt: "look", quoted: quoted,
			want: &waE2E.Message{ImageMessage: &waE2E.ImageMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(4242),
				Mimetype: proto.String("image/png"), Caption: proto.String("look"), ContextInfo: reply,
			}},
		},
		{
			name: "image without type or caption", kind: mediaImage,
			want: &waE2E.Message{ImageMessage: &waE2E.ImageMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(4242),
				Mimetype: proto.String("image/jpeg"),
			}},
		},
		{
			name: "video", kind: mediaVideo, mime: "video/mp4", file: "v.mp4", capt: "clip",
			want: &waE2E.Message{VideoMessage: &waE2E.VideoMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(4242),
				Mimetype: proto.String("video/mp4"), Caption: proto.String("clip"),
			}},
		},
		{
			name: "video typed by its name", kind: mediaVideo, file: "v.3gp",
			want: &waE2E.Message{VideoMessage: &waE2E.VideoMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(4242),
				Mimetype: proto.String("video/3gpp"),
			}},
		},
		{
			// Ogg/Opus is what WhatsApp plays as a voice note.
			name: "voice note", kind: mediaAudio, mime: "audio/ogg", file: "voice.ogg", quoted: quoted,
			as: bridge.Media{Kind: bridge.MediaVoice, DurationMS: 2600, Waveform: []int{1024, 0}},
			want: &waE2E.Message{AudioMessage: &waE2E.AudioMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(4242),
				Mimetype: proto.String("audio/ogg; codecs=opus"), PTT: proto.Bool(true), ContextInfo: reply,
				Seconds: proto.Uint32(3), Waveform: append(bytes.Repeat([]byte{100}, 32), make([]byte, 32)...),
			}},
		},
		{
			// WhatsApp refuses a voice note in another format: it goes as
			// audio, playable, rather than failing.
			name: "voice note in MP3", kind: mediaAudio, mime: "audio/mpeg", file: "voice.mp3",
			as: bridge.Media{Kind: bridge.MediaVoice, DurationMS: 1000},
			want: &waE2E.Message{AudioMessage: &waE2E.AudioMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(4242),
				Mimetype: proto.String("audio/mpeg"), PTT: proto.Bool(false), Seconds: proto.Uint32(1),
			}},
		},
		{
			// An Ogg file that is not a voice note stays a file to play.
			name: "ogg audio", kind: mediaAudio, mime: "audio/ogg", file: "song.ogg",
			want: &waE2E.Message{AudioMessage: &waE2E.AudioMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(4242),
				Mimetype: proto.String("audio/ogg"), PTT: proto.Bool(false),
			}},
		},
		{
			name: "GIF", kind: mediaVideo, mime: "video/mp4", file: "dance.mp4",
			as: bridge.Media{Kind: bridge.MediaGIF, Width: 320, Height: 240, DurationMS: 4000},
			want: &waE2E.Message{VideoMessage: &waE2E.VideoMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(4242),
				Mimetype: proto.String("video/mp4"), GifPlayback: proto.Bool(true),
				Width: proto.Uint32(320), Height: proto.Uint32(240), Seconds: proto.Uint32(4),
			}},
		},
		{
			name: "audio file", kind: mediaAudio, mime: "audio/mpeg", file: "song.mp3",
			want: &waE2E.Message{AudioMessage: &waE2E.AudioMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(4242),
				Mimetype: proto.String("audio/mpeg"), PTT: proto.Bool(false),
			}},
		},
		{
			name: "document", kind: mediaDocument, mime: "application/pdf", file: "Q3 report.pdf", capt: "numbers",
			want: &waE2E.Message{DocumentMessage: &waE2E.DocumentMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(4242),
				Mimetype: proto.String("application/pdf"), FileName: proto.String("Q3 report.pdf"),
				Title: proto.String("Q3 report.pdf"), Caption: proto.String("numbers"),
			}},
		},
		{
			name: "document with a path for a name", kind: mediaDocument, mime: "text/plain", file: "/etc/passwd",
			want: &waE2E.Message{DocumentMessage: &waE2E.DocumentMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(4242),
				Mimetype: proto.String("text/plain"), FileName: proto.String("passwd"), Title: proto.String("passwd"),
			}},
		},
		{
			name: "document without a name", kind: mediaDocument, mime: "application/pdf",
			want: &waE2E.Message{DocumentMessage: &waE2E.DocumentMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(4242),
				Mimetype: proto.String("application/pdf"), FileName: proto.String("file.pdf"), Title: proto.String("file.pdf"),
			}},
		},
		{
			name: "unknown kind goes as a document", kind: "gif", mime: "image/gif", file: "a.gif",
			want: &waE2E.Message{DocumentMessage: &waE2E.DocumentMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(4242),
				Mimetype: proto.String("image/gif"), FileName: proto.String("a.gif"), Title: proto.String("a.gif"),
			}},
		},
		{
			name: "sticker", kind: mediaSticker, file: "s.webp", as: bridge.Media{Kind: bridge.MediaSticker, Width: 512, Height: 512},
			want: &waE2E.Message{StickerMessage: &waE2E.StickerMessage{
				URL: proto.String(waMediaURL), DirectPath: proto.String(waDirectPath), MediaKey: waMediaKey,
				FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: proto.Uint64(4242),
				Mimetype: proto.String("image/webp"), Width: proto.Uint32(512), Height: proto.Uint32(512),
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.as
			m.MIME, m.Name = tt.mime, tt.file
			got := mediaMessage(tt.kind, up, m, tt.capt, tt.quoted)
			if !proto.Equal(got, tt.want) {
				t.Errorf("mediaMessage\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}

// TestMediaMessageRoundTrip: what the bridge sends, seen again as WhatsApp
// echoes it to the owner's devices, converts to the same attachment, and
// its reference downloads exactly what was uploaded.
func TestMediaMessageRoundTrip(t *testing.T) {
	up := whatsmeow.UploadResponse{
		URL: waMediaURL, DirectPath: waDirectPath,
		MediaKey: waMediaKey, FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: 4242,
	}
	for _, tt := range []struct {
		kind, mime, name, caption string
		as                        bridge.Media
		wantMIME, wantName        string
	}{
		{mediaImage, "image/jpeg", "a.jpg", "cap", bridge.Media{Width: 640, Height: 480}, "image/jpeg", "image.jpg"},
		{mediaVideo, "video/mp4", "a.mp4", "cap", bridge.Media{Width: 640, Height: 480, DurationMS: 7000}, "video/mp4", "video.mp4"},
		{mediaVideo, "video/mp4", "a.mp4", "", bridge.Media{Kind: bridge.MediaGIF, Width: 320, Height: 240, DurationMS: 2000}, "video/mp4", "video.mp4"},
		{mediaAudio, "audio/ogg", "a.ogg", "", bridge.Media{Kind: bridge.MediaVoice, DurationMS: 3000, Waveform: waveformFromWA(bytes.Repeat([]byte{50}, 64))}, "audio/ogg; codecs=opus", "voice.ogg"},
		{mediaAudio, "audio/mpeg", "a.mp3", "", bridge.Media{DurationMS: 180000}, "audio/mpeg", "audio.mp3"},
		{mediaDocument, "application/pdf", "report.pdf", "cap", bridge.Media{}, "application/pdf", "report.pdf"},
		{mediaSticker, "image/webp", "s.webp", "", bridge.Media{Kind: bridge.MediaSticker, Width: 512, Height: 512}, "image/webp", "sticker.webp"},
	} {
		sent := tt.as
		sent.MIME, sent.Name = tt.mime, tt.name
		msg := mediaMessage(tt.kind, up, sent, tt.caption, nil)
		got, ok := convertIncoming(dispatched(infoOwner(aliceJID, "3EB0SENT"), msg), "Me")
		if !ok || len(got.Event.Media) != 1 {
			t.Errorf("%s: the sent message converts to ok %v, %+v", tt.kind, ok, got.Event)
			continue
		}
		m := got.Event.Media[0]
		if m.MIME != tt.wantMIME || m.Name != tt.wantName || m.Size != 4242 || m.Caption != tt.caption || got.Event.Text != tt.caption {
			t.Errorf("%s: media %+v, text %q; want %s %s of 4242 bytes, caption %q",
				tt.kind, m, got.Event.Text, tt.wantMIME, tt.wantName, tt.caption)
		}
		// Its kind, length, size and waveform come back as they went.
		if m.Kind != tt.as.Kind || m.DurationMS != tt.as.DurationMS || m.Width != tt.as.Width || m.Height != tt.as.Height || !slices.Equal(m.Waveform, tt.as.Waveform) {
			t.Errorf("%s: came back as %s, %d ms, %dx%d, waveform %v; sent as %+v", tt.kind, m.Kind, m.DurationMS, m.Width, m.Height, m.Waveform, tt.as)
		}
		ref, err := decodeMediaRef(m.Ref)
		want := mediaRef{Kind: tt.kind, DirectPath: waDirectPath, URL: waMediaURL, MediaKey: waMediaKey,
			FileEncSHA256: waEncSHA, FileSHA256: waSHA, FileLength: 4242, MIME: tt.wantMIME}
		if err != nil || !sameMediaRef(ref, want) {
			t.Errorf("%s: ref %+v, %v; want %+v", tt.kind, ref, err, want)
		}
	}
}

func TestCleanFileName(t *testing.T) {
	for in, want := range map[string]string{
		"report.pdf":         "report.pdf",
		"  spaced name.txt ": "spaced name.txt",
		"dir/sub/file.png":   "file.png",
		`C:\Users\a\b.docx`:  "b.docx",
		"../../etc/passwd":   "passwd",
		"dir/":               "dir",
		"..":                 "",
		".":                  "",
		"/":                  "",
		"":                   "",
		"   ":                "",
	} {
		if got := cleanFileName(in); got != want {
			t.Errorf("cleanFileName(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestExtensionFor(t *testing.T) {
	for mimeType, want := range map[string]string{
		"image/jpeg":               ".jpg",
		"IMAGE/JPEG":               ".jpg",
		"audio/ogg; codecs=opus":   ".ogg",
		"audio/x-m4a":              ".m4a",
		"application/octet-stream": "",
		"":                         "",
	} {
		if got := extensionFor(mimeType); got != want {
			t.Errorf("extensionFor(%q) = %q; want %q", mimeType, got, want)
		}
	}
}

// TestMediaRefJSON: the stored form is stable JSON, since events wait in
// the outbox across upgrades.
func TestMediaRefJSON(t *testing.T) {
	got := encodeMediaRef(mediaRef{Kind: mediaImage, DirectPath: "/p", MediaKey: []byte{1, 2}, FileLength: 3, MIME: "image/jpeg"})
	want := `{"kind":"image","direct_path":"/p","media_key":"AQI=","file_length":3,"mime":"image/jpeg"}`
	if got != want {
		t.Errorf("encodeMediaRef = %s; want %s", got, want)
	}
	if !json.Valid([]byte(got)) || strings.Contains(got, "url") {
		t.Errorf("encodeMediaRef = %s: not JSON, or an empty URL stored", got)
	}
}
