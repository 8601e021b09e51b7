/** The app's formation: how many of each process type run, with scale controls for deploy tokens. */
import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, appPath } from '../api.js';

export interface FormationPanelProps {
  app: string;
  formation: Record<string, number>;
  /** Process types of the current release (scalable even at 0). */
  types: string[];
  canScale: boolean;
  onChanged: () => void;
}

function TypeRow({
  app,
  type,
  quantity,
  canScale,
  onChanged,
}: {
  app: string;
  type: string;
  quantity: number;
  canScale: boolean;
  onChanged: () => void;
}) {
  const [value, setValue] = useState(String(quantity));
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => setValue(String(quantity)), [quantity]);
  const wanted = Number(value);
  const valid = /^\d{1,4}$/.test(value);
  const scale = async (e: Event) => {
    e.preventDefault();
    if (!valid) return;
    setBusy(true);
    setError(null);
    try {
      await api('PATCH', appPath(app, 'formation'), { json: { formation: { [type]: wanted } } });
      onChanged();
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <li class="formation-row" data-type={type}>
      <span class="type">{type}</span>
      {canScale ? (
        <form class="scale" onSubmit={(e) => void scale(e)}>
          <button
            type="button"
            class="step"
            aria-label={`One ${type} fewer`}
            disabled={!valid || wanted <= 0}
            onClick={() => setValue(String(Math.max(0, wanted - 1)))}
          >
            −
          </button>
          <input
            type="number"
            min={0}
            max={9999}
            inputMode="numeric"
            aria-label={`${type} instances`}
            value={value}
            onInput={(e) => setValue(e.currentTarget.value)}
          />
          <button type="button" class="step" aria-label={`One ${type} more`} disabled={!valid} onClick={() => setValue(String(wanted + 1))}>
            +
          </button>
          <button type="submit" disabled={busy || !valid || wanted === quantity}>
            Scale
          </button>
        </form>
      ) : (
        <span class="quantity">{quantity}</span>
      )}
      {error && (
        <span class="error" role="alert">
          {error}
        </span>
      )}
    </li>
  );
}

export function FormationPanel({ app, formation, types, canScale, onChanged }: FormationPanelProps) {
  const all = [...new Set([...types, ...Object.keys(formation)])];
  return (
    <section aria-labelledby="formation-h" class="card">
      <h2 id="formation-h">Formation</h2>
      {all.length === 0 ? (
        <p class="muted">Nothing to run before the first deploy.</p>
      ) : (
        <ul class="formation">
          {all.map((t) => (
            <TypeRow key={t} app={app} type={t} quantity={formation[t] ?? 0} canScale={canScale} onChanged={onChanged} />
          ))}
        </ul>
      )}
    </section>
  );
}
