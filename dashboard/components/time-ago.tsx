/** A relative time with the absolute one on hover (and for screen readers, as the datetime). */
import { absoluteTime, timeAgo } from '../format.js';

export function TimeAgo({ iso }: { iso: string }) {
  return (
    <time dateTime={iso} title={absoluteTime(iso)}>
      {timeAgo(iso)}
    </time>
  );
}
