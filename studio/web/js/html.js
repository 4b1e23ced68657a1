// htm bound to Preact: JSX-like templates without a build step (html`<${Component} prop=${value} />`).
import { h } from '../vendor/preact.mjs';
import htm from '../vendor/htm.mjs';

export const html = htm.bind(h);
