package irc

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/phonebridge/phonebridge/bridge"
)

// IRC carries no files. With the media server (config media:) the
// connector claims media and turns each attachment into a line with its
// link; without one the core sends a placeholder naming the file instead.

// mediaLines publishes out's attachments and returns a line for each:
// "[image: cat.jpg, 1.2 MB] https://…", then the caption where it is not
// the message's text. An attachment the server refuses for good (too
// large, gone at its origin) keeps its line without a link; other errors
// are returned, and the delivery is retried.
func (c *Connector) mediaLines(ctx context.Context, out *bridge.Outgoing) ([]string, error) {
	var lines []string
	for _, m := range out.Media {
		line := describeMedia(m)
		url, err := c.media.Publish(ctx, m)
		switch {
		case err == nil:
			line += " " + url
		case bridge.IsPermanent(err):
			c.log.Warn("an attachment is relayed to IRC as its name only", "chat", out.Chat.ID, "err", err)
			line += " (not available)"
		default:
			return nil, fmt.Errorf("publish an attachment for IRC: %w", err)
		}
		if cap := cleanText(m.Caption); cap != "" && m.Caption != out.Text {
			line += " " + cap
		}
		lines = append(lines, line)
	}
	return lines, nil
}

// describeMedia names an attachment: its kind, file name, length and
// size.
func describeMedia(m bridge.Media) string {
	kind := bridge.MediaWord(m)
	var details []string
	if name := strings.Join(strings.Fields(cleanText(m.Name)), " "); name != "" {
		details = append(details, name)
	}
	if s := (m.DurationMS + 500) / 1000; s > 0 && m.Kind != bridge.MediaGIF {
		details = append(details, fmt.Sprintf("%d:%02d", s/60, s%60))
	}
	switch {
	case m.Size >= 1<<20:
		details = append(details, fmt.Sprintf("%.1f MB", float64(m.Size)/(1<<20)))
	case m.Size >= 1<<10:
		details = append(details, fmt.Sprintf("%.1f KB", float64(m.Size)/(1<<10)))
	case m.Size > 0:
		details = append(details, fmt.Sprintf("%d B", m.Size))
	}
	if len(details) == 0 {
		return "[" + kind + "]"
	}
	return "[" + kind + ": " + strings.Join(details, ", ") + "]"
}

// publishText publishes the whole of a message cut by max_lines, for the
// marker to link to; "" when there is no media server or it fails.
func (c *Connector) publishText(ctx context.Context, text string) string {
	if c.media == nil {
		return ""
	}
	url, err := c.media.Publish(ctx, bridge.Media{
		MIME: "text/plain; charset=utf-8",
		Name: "message.txt",
		Size: int64(len(text)),
		Open: func(context.Context) (io.ReadCloser, error) {
			return io.NopCloser(strings.NewReader(text)), nil
		},
	})
	if err != nil {
		c.log.Warn("the whole of a long message could not be published; IRC gets the cut only", "err", err)
		return ""
	}
	return url
}
