package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/phonebridge/phonebridge/bridge"
	"github.com/phonebridge/phonebridge/bridge/control"
	"github.com/phonebridge/phonebridge/internal/daemon"
	"github.com/phonebridge/phonebridge/internal/linktext"
)

// dialDaemon reaches the running daemon; status and reload need one.
func dialDaemon(g *globalFlags) (*control.Client, error) {
	cfg, _, err := load(g, true)
	if err != nil {
		return nil, err
	}
	c, err := control.Dial(daemon.SocketPath(cfg))
	if errors.Is(err, control.ErrNotRunning) {
		return nil, fmt.Errorf("%w — start it with `phonebridge run -c %s` or `systemctl start phonebridge`", err, cfg.Path)
	}
	return c, err
}

func newStatusCommand(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the running daemon: connectors, links, waiting deliveries",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := dialDaemon(g)
			if err != nil {
				return err
			}
			st, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

func printStatus(out io.Writer, st control.StatusReport) {
	fmt.Fprintf(out, "phonebridge %s, up %s (since %s)\nconfig %s\n\n", st.Version, uptime(time.Since(st.Started)), st.Started.Local().Format(time.DateTime), st.Config)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONNECTOR\tTYPE\tSTATE\tSINCE\tDETAIL")
	for _, c := range st.Connectors {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Name, c.Type, c.State, since(c.Since), dash(c.Detail))
	}
	tw.Flush()
	if len(st.Links) > 0 {
		fmt.Fprintln(out)
		tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "LINK\tACCOUNT\tSTATE\tSINCE\tHISTORY\tDETAIL")
		for _, l := range st.Links {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", l.Name, dash(l.Account.String()), linktext.State(l.State), since(l.Since), historyLine(l.History), dash(linkDetail(l)))
		}
		tw.Flush()
	}
	fmt.Fprintln(out)
	if len(st.Outbox) == 0 {
		fmt.Fprintln(out, "Outbox: empty, every event delivered.")
	} else {
		tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "WAITING FOR\tEVENTS\tOLDEST\tATTEMPTS\tLAST ERROR")
		for _, q := range st.Outbox {
			fmt.Fprintf(tw, "%s/%s\t%d\t%s\t%d\t%s\n", q.Connector, q.Chat, q.Depth, since(q.Oldest), q.Attempts, dash(q.LastError))
		}
		tw.Flush()
	}
	if st.Failed > 0 {
		fmt.Fprintf(out, "%d event(s) failed for good and were skipped (see the log for why).\n", st.Failed)
	}
}

// historyLine is a link's backfill: "120/200 relayed" while it runs.
func historyLine(h *bridge.HistoryProgress) string {
	switch {
	case h == nil:
		return "-"
	case h.Waiting == 0:
		return fmt.Sprintf("%d relayed", h.Relayed)
	}
	return fmt.Sprintf("%d/%d relayed", h.Relayed, h.Relayed+h.Waiting)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// uptime is a duration for people: "3d 4h", "5h 12m", "42s".
func uptime(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd %dh", int(d.Hours())/24, int(d.Hours())%24)
	case d >= time.Hour:
		return fmt.Sprintf("%dh %dm", int(d.Hours()), int(d.Minutes())%60)
	case d >= time.Minute:
		return fmt.Sprintf("%dm %ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return d.String()
}

func newBackfillCommand(g *globalFlags) *cobra.Command {
	var count int
	cmd := &cobra.Command{
		Use:   "backfill LINK CHAT",
		Short: "Ask the phone of LINK for older messages of CHAT (an id or a name)",
		Long: `Ask the phone of the link LINK for COUNT messages of CHAT older than the
oldest phonebridge has, as WhatsApp Web does when you scroll up. The phone
answers in its own time; the messages go to the destinations that show
history (Matrix portals, the API), after the ones already there.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := dialDaemon(g)
			if err != nil {
				return err
			}
			if err := c.Backfill(cmd.Context(), args[0], args[1], count); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Asked the phone of %s for %d older messages of %s; they arrive as history.\n", args[0], count, args[1])
			return nil
		},
	}
	cmd.Flags().IntVar(&count, "count", 50, "how many older messages to ask for (at most 500)")
	return cmd
}

func newReloadCommand(g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Make the running daemon read its config again (as SIGHUP does)",
		Long: "Make the running daemon read its config file again and apply it: routes at once, a connector\n" +
			"whose section changed is restarted, others keep running. A config with problems is refused\n" +
			"and the running one stays.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := dialDaemon(g)
			if err != nil {
				return err
			}
			rep, err := c.Reload(cmd.Context())
			var ce *control.Error
			if errors.As(err, &ce) && len(ce.Problems) > 0 {
				return fmt.Errorf("%s:\n  %s", ce.Message, strings.Join(ce.Problems, "\n  "))
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "reloaded %s\n", rep.Config)
			for _, l := range []struct {
				what  string
				names []string
			}{{"added", rep.Added}, {"restarted", rep.Restarted}, {"removed", rep.Removed}, {"apply at the next start", rep.Ignored}} {
				if len(l.names) > 0 {
					fmt.Fprintf(out, "  %s: %s\n", l.what, strings.Join(l.names, ", "))
				}
			}
			if rep.Error != "" {
				return fmt.Errorf("the reload was applied in part: %s", rep.Error)
			}
			return nil
		},
	}
}
