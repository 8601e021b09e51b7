/** An error answer of the API, said in a sentence. */
import type { ApiError } from '../api.js';

export function Problem({ error }: { error: ApiError | null }) {
  if (!error) return null;
  return (
    <p class="error" role="alert" data-code={error.code}>
      {error.message}
    </p>
  );
}
