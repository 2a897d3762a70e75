// containerd image names <-> kagami tag references. The CRI plugin names images fully
// (`docker.io/library/nginx:1.27`), and also records `repo@sha256:…` and bare `sha256:…`
// names for the same content; only canonical tag names become tags.
import { formatTagReference, parseReference, type TagReference } from "../../oci/index.ts";

/** The tag an image name stands for, or undefined when the name is not a canonical tag. */
export function tagOfImageName(name: string): TagReference | undefined {
  if (!name.includes("/")) return undefined;
  let parsed;
  try {
    parsed = parseReference(name, { defaultTag: false });
  } catch {
    return undefined;
  }
  if (parsed.tag === undefined || parsed.digest !== undefined) return undefined;
  const ref: TagReference = { registry: parsed.registry, repository: parsed.repository, tag: parsed.tag };
  // Names that only parse after normalisation (`nginx:1`, `index.docker.io/…`) are not what
  // CRI writes and not what peers ask for.
  return formatTagReference(ref) === name ? ref : undefined;
}

export function imageNameOfTag(ref: TagReference): string {
  return formatTagReference(ref);
}
