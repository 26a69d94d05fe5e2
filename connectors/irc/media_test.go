package irc

import (
	"testing"

	"github.com/phonebridge/phonebridge/bridge"
)

// An attachment is named for what it is: a voice message with its length,
// a sticker, a GIF.
func TestDescribeMediaSaysWhatItIs(t *testing.T) {
	for _, tc := range []struct {
		m    bridge.Media
		want string
	}{
		{bridge.Media{MIME: "audio/ogg", Name: "voice.ogg", Size: 2048, Kind: bridge.MediaVoice, DurationMS: 65_400}, "[voice message: voice.ogg, 1:05, 2.0 KB]"},
		{bridge.Media{MIME: "image/webp", Name: "sticker.webp", Kind: bridge.MediaSticker}, "[sticker: sticker.webp]"},
		{bridge.Media{MIME: "video/mp4", Kind: bridge.MediaGIF, DurationMS: 3000}, "[GIF]"},
		{bridge.Media{MIME: "video/mp4", Name: "clip.mp4", DurationMS: 12_000}, "[video: clip.mp4, 0:12]"},
		{bridge.Media{MIME: "application/pdf", Name: "a.pdf", Size: 10}, "[file: a.pdf, 10 B]"},
	} {
		if got := describeMedia(tc.m); got != tc.want {
			t.Errorf("describeMedia(%+v) = %q, want %q", tc.m, got, tc.want)
		}
	}
}
