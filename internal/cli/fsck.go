package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/octohelm/crpe/internal/fsck"
	"github.com/octohelm/crpe/internal/storage"
)

func newFsckCmd(g *globals) *cobra.Command {
	var data string
	var repair, asJSON bool
	cmd := &cobra.Command{
		Use:   "fsck",
		Short: "Check a data folder: re-hash every blob, resolve every tag and manifest",
		Long: `crpe fsck re-hashes every blob, checks that every tag resolves to a recorded
manifest, that every manifest's config and layers are present (an index's
children may be absent: sparse indexes are legitimate) and that every blob a
repository links exists. It lists each problem and exits 1 if there is any.

Leftover temp files of interrupted writes are reported as information, not
problems. --repair removes corrupt blobs, stray files and leftover temp files.
It runs on the data folder of a process that was just killed; while a crpe
process still holds the folder it waits briefly, then fails.`,
		Example: `  crpe fsck --data /var/lib/crpe
  crpe fsck --data /var/lib/crpe --repair
  crpe fsck --data /var/lib/crpe --json | jq .summary`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			var findings []fsck.Finding
			sum, err := fsck.Run(cmd.Context(), data, storage.IndexPath(data), repair, func(f fsck.Finding) {
				if asJSON {
					findings = append(findings, f)
					return
				}
				kind := "info"
				if f.Problem {
					kind = "PROBLEM"
				}
				rep := ""
				if f.Repaired {
					rep = " (repaired)"
				}
				fmt.Fprintf(out, "%s\t%s\t%s%s\n", kind, f.Where, f.Message, rep)
			})
			if err != nil {
				return storage.InUse(data, err)
			}
			if asJSON {
				if findings == nil {
					findings = []fsck.Finding{}
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				_ = enc.Encode(map[string]any{"summary": sum, "findings": findings})
			} else {
				fmt.Fprintf(out, "checked %d blobs, %d repositories, %d manifests, %d tags: %d problems, %d notes\n",
					sum.Blobs, sum.Repos, sum.Manifests, sum.Tags, sum.Problems, sum.Info)
			}
			if sum.Problems > 0 && !repair {
				return &exitError{code: 1, msg: fmt.Sprintf("%d problems found", sum.Problems)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "crpe-data", "data folder to check")
	cmd.Flags().BoolVar(&repair, "repair", false, "remove corrupt blobs and leftover temp files")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}
